//! Replays the committed fuzz corpora of this crate's targets (`fuzz/corpus/<target>/`) and the
//! committed crash reproducers (`fuzz/artifacts/<target>/`) through the same entry functions the
//! `cargo fuzz` targets call, on stable, so every crash found stays fixed. (`fuzz/findings/`
//! holds reproducers of open findings and is not replayed.)

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use tollgate_crds::fuzzing;

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
fn manifest_corpus() {
    replay("manifest", fuzzing::manifest);
}

#[test]
fn compile_corpus() {
    replay("compile", fuzzing::compile_manifests);
}

/// The compile target builds real manifests: every byte pair picks a document, so the fuzzer
/// starts from objects that compile rather than from YAML noise.
#[test]
fn compile_input_assembles_documents() {
    let text = fuzzing::compile_input(&[0, 0, 1, 5, 2, 9]);
    assert_eq!(text.matches("---\n").count(), 3, "{text}");
    assert!(text.contains("kind:"), "{text}");
    let mut set = tollgate_crds::ManifestSet::default();
    set.add_file("x.yaml", &text);
    let s = &set.snapshot;
    let objects = s.products.len() + s.plans.len() + s.subscriptions.len() + s.policies.len();
    assert!(objects >= 2, "{objects} objects read from:\n{text}");
}
