//! Fuzz entry points: one function per `cargo fuzz` target of this crate (`fuzz/`), shared with
//! the replay test (`tests/fuzz_corpus.rs`) so a crash found once stays fixed on stable.
//!
//! Each function takes the fuzzer's bytes, runs the code under test and asserts its invariants
//! with `assert!`: a panic here is a finding. Not part of the API (hidden from the docs); a
//! signature change elsewhere should only need a change in the thin calls below.

use crate::compile::compile;
use crate::manifest::ManifestSet;
use crate::snapshot::Snapshot;
use crate::table::RoutingTable;

/// The file name every fuzzed document is read as.
const FILE: &str = "fuzz.yaml";

/// The manifest reader: any text, read as one multi-document file, never panics, and every
/// problem it reports names the file it came from.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut set = ManifestSet::default();
    set.add_file(FILE, text);
    for d in &set.problems {
        assert_eq!(
            d.file.as_deref(),
            Some(FILE),
            "a reading problem does not name its file: {d:?}"
        );
    }
}

/// Documents the compile target assembles its inputs from: every document of the compiler's
/// golden inputs (products, plans, subscriptions, policies, secrets, with errors and conflicts).
const POOL_FILES: [&str; 9] = [
    include_str!("../testdata/jwt.in.yaml"),
    include_str!("../testdata/manifest_errors.in.yaml"),
    include_str!("../testdata/plan_errors.in.yaml"),
    include_str!("../testdata/policy_errors.in.yaml"),
    include_str!("../testdata/policy_features.in.yaml"),
    include_str!("../testdata/product_errors.in.yaml"),
    include_str!("../testdata/route_conflicts.in.yaml"),
    include_str!("../testdata/subscription_errors.in.yaml"),
    include_str!("../testdata/weather.in.yaml"),
];

/// Namespaces a document may be moved to, so references across the pool meet or dangle.
const NAMESPACES: [&str; 3] = ["default", "weather", "t"];

fn pool() -> &'static [String] {
    static POOL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        POOL_FILES
            .iter()
            .flat_map(|f| f.split("\n---"))
            .map(|d| d.trim_start_matches('-').trim().to_string())
            .filter(|d| d.contains("kind:"))
            .collect()
    })
}

/// The YAML file the compile target builds from `data`: each pair of bytes picks a document of
/// the pool and (optionally) moves it to another namespace. Structure comes from the pool, so
/// the fuzzer explores combinations of valid and broken objects instead of YAML syntax.
pub fn compile_input(data: &[u8]) -> String {
    let pool = pool();
    let mut out = String::new();
    for pair in data.chunks(2).take(64) {
        let doc = &pool[usize::from(pair[0]) % pool.len()];
        let ns = pair.get(1).copied().unwrap_or(0);
        out.push_str("---\n");
        if ns & 3 == 0 {
            out.push_str(doc);
        } else {
            let target = NAMESPACES[usize::from(ns >> 2) % NAMESPACES.len()];
            out.push_str(&move_namespace(doc, target));
        }
        out.push('\n');
    }
    out
}

/// `doc` with every `namespace:` value replaced by `target` (the object's and its references').
fn move_namespace(doc: &str, target: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    for line in doc.lines() {
        match line.split_once("namespace:") {
            Some((indent, _)) if indent.trim().is_empty() || indent.trim_end().ends_with('{') => {
                out.push_str(indent);
                out.push_str("namespace: ");
                out.push_str(target);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The compiler: manifests assembled by [`compile_input`] compile deterministically and
/// independently of input order, and the table survives its wire form (JSON) unchanged.
pub fn compile_manifests(data: &[u8]) {
    let text = compile_input(data);
    let mut set = ManifestSet::default();
    set.add_file(FILE, &text);
    let first = set.compile();
    assert_eq!(first, set.compile(), "compiling twice differs");

    let mut reversed: Snapshot = set.snapshot.clone();
    reversed.products.reverse();
    reversed.plans.reverse();
    reversed.subscriptions.reverse();
    reversed.policies.reverse();
    reversed.secrets.reverse();
    reversed.endpoints.reverse();
    reversed.rejected.reverse();
    assert_eq!(
        compile(&set.snapshot),
        compile(&reversed),
        "the compiled table depends on input order"
    );

    let table = &first.table;
    let json = serde_json::to_vec(table).expect("a table serialises");
    let back: RoutingTable = serde_json::from_slice(&json).expect("a table reads back");
    assert_eq!(&back, table, "the table changes through JSON");
    assert_eq!(back.digest(), table.digest());
    for s in &table.subscriptions {
        for d in &s.key_digests {
            assert!(
                d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()),
                "a subscription key is not a SHA-256 digest in the table"
            );
        }
    }
}
