//! The README's status table must be the proxy's declaration of what it sends
//! (`tollgate_proxy::problem`): one row per problem type, with its status, title and extra
//! headers. A kind without a row, a row for a kind the proxy never sends, or a row that says
//! something else fails here, and the message prints the row to paste.
//!
//! Other README tables whose columns start with `status | problem type`, and prose such as
//! `` `503 quota-store-unavailable` ``, must agree on the status of each type they name.

use std::collections::BTreeMap;
use std::path::Path;

use tollgate_proxy::problem::{ProblemKind, ProblemSpec};

/// Header of the table that lists every problem type (the one this test holds exact).
const MAIN_TABLE: &str = "| status | problem type (`https://tollgate.dev/problems/…`) |";
/// Any table listing problem types starts its header like this.
const ANY_TABLE: &str = "| status | problem type";

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).expect("README.md is readable")
}

fn catalogue() -> BTreeMap<&'static str, ProblemSpec> {
    ProblemKind::ALL
        .iter()
        .map(|k| (k.spec().slug, k.spec()))
        .collect()
}

/// The body rows of every table whose header line starts with `prefix`, with 1-based line
/// numbers.
fn table_rows<'a>(readme: &'a str, prefix: &str) -> Vec<(usize, &'a str)> {
    let mut rows = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        if !line.starts_with(prefix) {
            continue;
        }
        lines.next(); // the |---| separator
        for (i, row) in lines.by_ref() {
            if !row.starts_with('|') {
                break;
            }
            rows.push((i + 1, row));
        }
    }
    rows
}

/// The cells of a table row; the last cell keeps any `|` it contains.
fn cells(row: &str, n: usize) -> Vec<&str> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    inner.splitn(n, '|').map(str::trim).collect()
}

/// `` `slug` `` → `slug`, if the cell is exactly one code span.
fn code_span(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?
        .strip_suffix('`')
        .filter(|s| !s.contains('`'))
}

/// `ratelimit-limit` → `RateLimit-Limit`: how the README spells header names (the check
/// itself ignores case, as HTTP does).
fn header_display(name: &str) -> String {
    name.split('-')
        .map(|part| match part {
            "www" => "WWW".to_string(),
            "ratelimit" => "RateLimit".to_string(),
            _ => {
                let mut chars = part.chars();
                chars.next().map_or(String::new(), |c| {
                    c.to_ascii_uppercase().to_string() + chars.as_str()
                })
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The README row for `spec`, with `when` as its last column.
fn expected_row(spec: &ProblemSpec, when: &str) -> String {
    let headers: Vec<String> = spec
        .headers
        .iter()
        .map(|h| format!("`{}`", header_display(h)))
        .collect();
    let headers = if headers.is_empty() {
        " ".to_string()
    } else {
        format!(" {} ", headers.join(", "))
    };
    format!(
        "| {} | `{}` | {} |{headers}| {when} |",
        spec.status.as_u16(),
        spec.slug,
        spec.title
    )
}

#[test]
fn readme_status_table_is_the_declared_catalogue() {
    let readme = readme();
    let catalogue = catalogue();
    let rows = table_rows(&readme, MAIN_TABLE);
    assert!(
        !rows.is_empty(),
        "README.md has no table headed {MAIN_TABLE:?}"
    );

    let mut problems = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (line, row) in rows {
        let c = cells(row, 5);
        let [status, slug, title, headers, when] = c[..] else {
            problems.push(format!(
                "README.md:{line}: expected 5 columns (status, problem type, title, extra headers, when): {row}"
            ));
            continue;
        };
        let Some(slug) = code_span(slug) else {
            problems.push(format!(
                "README.md:{line}: one problem type per row, as `slug`: {row}"
            ));
            continue;
        };
        let Some(spec) = catalogue.get(slug) else {
            problems.push(format!(
                "README.md:{line}: the proxy never sends `{slug}`; remove the row: {row}"
            ));
            continue;
        };
        if let Some(first) = seen.insert(slug, line) {
            problems.push(format!(
                "README.md:{line}: `{slug}` already has a row at line {first}; remove one"
            ));
            continue;
        }
        let headers: Vec<String> = headers
            .split(',')
            .map(|h| h.trim().trim_matches('`').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let declared: Vec<String> = spec.headers.iter().map(|h| h.to_string()).collect();
        let matches = status.parse::<u16>().ok() == Some(spec.status.as_u16())
            && title == spec.title
            && headers == declared
            && !when.is_empty();
        if !matches {
            let when = if when.is_empty() { "…when…" } else { when };
            problems.push(format!(
                "README.md:{line}: `{slug}` differs from proxy/src/problem.rs; the row should read\n{}",
                expected_row(spec, when)
            ));
        }
    }
    for (slug, spec) in &catalogue {
        if !seen.contains_key(slug) {
            problems.push(format!(
                "README.md has no row for `{slug}`; add (and say when in the last column)\n{}",
                expected_row(spec, "…when…")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "README.md's status table is not proxy/src/problem.rs's declaration:\n\n{}\n",
        problems.join("\n\n")
    );
}

/// Other tables (such as the JWT one) and prose name a type with its status: both must be the
/// declared ones.
#[test]
fn readme_names_every_problem_type_with_its_declared_status() {
    let readme = readme();
    let catalogue = catalogue();
    // A cell may name several types (`a` / `b`); the main table's own test refuses that there.
    let mut mentions: Vec<(usize, String, String)> = Vec::new();
    for (line, row) in table_rows(&readme, ANY_TABLE) {
        let c = cells(row, 3);
        let (Some(status), Some(types)) = (c.first(), c.get(1)) else {
            continue;
        };
        for slug in types.split(" / ").filter_map(code_span) {
            mentions.push((line, status.to_string(), slug.to_string()));
        }
    }
    // `503 quota-store-unavailable` in running text; 2xx/3xx spans (`200 ok`) are not problems.
    for (i, line) in readme.lines().enumerate() {
        for span in line.split('`').skip(1).step_by(2) {
            if let Some((status, slug)) = span.split_once(' ') {
                let is_slug =
                    !slug.is_empty() && slug.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
                let is_error = status.len() == 3
                    && status.bytes().all(|b| b.is_ascii_digit())
                    && matches!(status.as_bytes()[0], b'4' | b'5');
                if is_slug && is_error {
                    mentions.push((i + 1, status.to_string(), slug.to_string()));
                }
            }
        }
    }
    let wrong: Vec<String> = mentions
        .iter()
        .filter_map(|(line, status, slug)| {
            match catalogue.get(slug.as_str()).map(|s| s.status.as_u16()) {
                Some(declared) if status.parse() == Ok(declared) => None,
                Some(declared) => Some(format!(
                    "README.md:{line}: `{slug}` is sent with {declared}, not {status}"
                )),
                None => Some(format!(
                    "README.md:{line}: `{slug}` ({status}) is not a problem type the proxy sends"
                )),
            }
        })
        .collect();
    assert!(mentions.len() > 10, "found too few mentions: {mentions:?}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
