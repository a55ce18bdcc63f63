//! The proxy's logs as the real binary writes them: flat JSON lines (the same shape as the
//! operator's), no ANSI colour codes when stdout is not a terminal, and a refused first load
//! says that nothing is served rather than claiming a last good table.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run the proxy on `dir` until its log holds `want` (or 20 s), then stop it; the log.
fn run_until(name: &str, dir: &std::path::Path, format: &str, want: &str) -> String {
    let log = std::env::temp_dir().join(format!(
        "tollgate-proxy-logs-{name}-{}.log",
        std::process::id()
    ));
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
        .arg("--from-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--log-format", format, "--threads", "1"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::from(file.try_clone().expect("log file")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start tollgate-proxy");
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(want) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
    assert!(text.contains(want), "no {want:?} in the log:\n{text}");
    text
}

/// A directory removed when dropped.
struct Dir(std::path::PathBuf);

impl std::ops::Deref for Dir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bad_dir(name: &str) -> Dir {
    let dir =
        std::env::temp_dir().join(format!("tollgate-proxy-logs-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("broken.yaml"), "kind: Plan\nspec: [").expect("write");
    Dir(dir)
}

#[test]
fn a_refused_first_load_is_logged_as_flat_json_saying_nothing_is_served() {
    let dir = bad_dir("json");
    let text = run_until("json", &dir, "json", "reload refused");
    let line = text
        .lines()
        .find(|l| l.contains("reload refused"))
        .expect("the refusal line");
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert!(v.get("fields").is_none(), "nested fields: {line}");
    let message = v["message"].as_str().expect("a top-level message");
    assert!(v["dir"].is_string(), "fields at the top level: {line}");
    assert!(
        !message.contains("last good table"),
        "there is no last good table at startup: {message}"
    );
    assert!(message.contains("nothing is served"), "{message}");
}

#[test]
fn text_logs_to_a_file_carry_no_colour_codes() {
    let dir = bad_dir("text");
    let text = run_until("text", &dir, "text", "reload refused");
    assert!(
        !text.contains('\x1b'),
        "ANSI escape codes in a file:\n{text:?}"
    );
}
