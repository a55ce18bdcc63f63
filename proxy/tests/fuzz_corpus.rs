//! Replays the committed fuzz corpora of the proxy's targets (`fuzz/corpus/<target>/`) and the
//! committed crash reproducers (`fuzz/artifacts/<target>/`) through the same entry functions the
//! `cargo fuzz` targets call, on stable, so every crash found stays fixed. (`fuzz/findings/`
//! holds reproducers of open findings and is not replayed.)

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use tollgate_proxy::fuzzing;

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every corpus file and reproducer of `target` through `entry`; fails naming each input that
/// panicked.
fn replay(target: &str, entry: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = files_in(&fuzz.join("corpus").join(target));
    assert!(
        inputs.len() >= 5,
        "fuzz/corpus/{target} has {} inputs; it is committed with more",
        inputs.len()
    );
    inputs.extend(files_in(&fuzz.join("artifacts").join(target)));
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("corpus file is readable");
            catch_unwind(AssertUnwindSafe(|| entry(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "inputs that panic: {failed:?}");
}

#[test]
fn jwt_corpus() {
    replay("jwt", fuzzing::jwt);
}

#[test]
fn jwks_corpus() {
    replay("jwks", fuzzing::jwks);
}

#[test]
fn json_scan_corpus() {
    replay("json_scan", fuzzing::json_scan);
}

#[test]
fn framing_corpus() {
    replay("framing", fuzzing::framing);
}

#[test]
fn path_corpus() {
    replay("path", fuzzing::path);
}

#[test]
fn http1_corpus() {
    replay("http1", fuzzing::http1);
}

/// The targets reach what they test: the signed tokens verify and a forged one does not (so
/// the forgery check is not vacuous), and the front end answers from the real pipeline.
#[test]
fn the_targets_reach_the_code_they_guard() {
    for token in fuzzing::SIGNED_TOKENS {
        assert!(fuzzing::verifies(token), "a signed token is refused");
    }
    let t = fuzzing::SIGNED_TOKENS[0];
    let (signed, sig) = t.rsplit_once('.').expect("three parts");
    let (header, _) = signed.split_once('.').expect("header");
    // Another payload (iss, exp) under the same signature.
    let forged =
        format!("{header}.eyJpc3MiOiJodHRwczovL2lzc3Vlci5mdXp6IiwiZXhwIjo0MTAyNDQ0ODAwfQ.{sig}");
    assert!(!fuzzing::verifies(&forged));

    let status = |request: &str| {
        let answer = fuzzing::front_answer(request.as_bytes());
        String::from_utf8_lossy(&answer)
            .get(..12)
            .unwrap_or_default()
            .to_string()
    };
    // Open product, closed backend port: the pipeline ran through to forwarding.
    assert_eq!(
        status("GET /open/ HTTP/1.1\r\nHost: open.fuzz\r\n\r\n"),
        "HTTP/1.1 502"
    );
    assert_eq!(
        status("GET /api/read HTTP/1.1\r\nHost: api.fuzz\r\n\r\n"),
        "HTTP/1.1 401"
    );
    let keyed = format!(
        "GET /api/read HTTP/1.1\r\nHost: api.fuzz\r\nX-Subscription-Key: {}\r\n\r\n",
        fuzzing::FRONT_KEY
    );
    assert_eq!(status(&keyed), "HTTP/1.1 502");
    let bearer = format!("GET /x HTTP/1.1\r\nHost: jwt.fuzz\r\nAuthorization: Bearer {t}\r\n\r\n");
    assert_eq!(status(&bearer), "HTTP/1.1 502");
    assert_eq!(
        status("GET /x HTTP/1.1\r\nHost: jwt.fuzz\r\n\r\n"),
        "HTTP/1.1 401"
    );
    assert_eq!(
        status("GET /open/ HTTP/1.1\r\nHost: nowhere.fuzz\r\n\r\n"),
        "HTTP/1.1 404"
    );
}
