//! `docs/architecture.md` describes every file and folder of `proxy/src`: a new module without a
//! line there, or a line for a module that is gone, fails here.

use std::path::Path;

#[test]
fn architecture_doc_names_every_module_of_the_proxy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("../docs/architecture.md"))
        .expect("docs/architecture.md is readable");
    let mut entries: Vec<String> = std::fs::read_dir(root.join("src"))
        .expect("proxy/src is readable")
        .map(|e| {
            let e = e.expect("directory entry");
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                format!("{name}/")
            } else {
                name
            }
        })
        .collect();
    entries.sort();
    assert!(entries.len() > 10, "read proxy/src: {entries:?}");
    let missing: Vec<&String> = entries
        .iter()
        .filter(|e| !doc.contains(&format!("`{e}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md has no row naming {missing:?}: add one to its proxy table"
    );
    // The other way round: every path in the proxy table's second column exists.
    for line in doc.lines().filter(|l| l.starts_with('|')) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(paths) = cols.get(2) else { continue };
        for path in paths.split(',').map(|p| p.trim().trim_matches('`')) {
            if path.ends_with(".rs") || path.ends_with('/') {
                assert!(
                    root.join("src").join(path).exists(),
                    "docs/architecture.md names proxy/src/{path}, which does not exist"
                );
            }
        }
    }
}
