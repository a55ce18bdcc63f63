//! The operator's logs as a real process writes them: flat JSON lines (the proxy's shape) and
//! no ANSI colour codes when stdout is not a terminal. Needs no cluster: the kubeconfig points
//! at a closed loopback port, and the operator logs its first lines before it needs the API.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kubeconfig(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "tollgate-logs-{name}-{}.kubeconfig",
        std::process::id()
    ));
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}\n\
         users:\n- name: u\n  user: {token: not-a-real-token}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
    )
    .expect("kubeconfig");
    path
}

/// Run the operator until its log holds `want` (or 20 s), then stop it; the log.
fn run_until(name: &str, extra: &[&str], want: &str) -> String {
    let log = std::env::temp_dir().join(format!("tollgate-logs-{name}-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).expect("log file");
    let config = kubeconfig(name);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-operator"))
        .args(["--metrics-listen", "127.0.0.1:0", "--namespace", "ops"])
        .args(extra)
        .env("KUBECONFIG", &config)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::from(file.try_clone().expect("log file")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start tollgate-operator");
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
    // Runs leave nothing in the temporary directory.
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&config);
    assert!(text.contains(want), "no {want:?} in the log:\n{text}");
    text
}

#[test]
fn json_lines_are_flat_like_the_proxys() {
    let text = run_until("json", &["--log-json"], "health and metrics listening");
    let line = text
        .lines()
        .find(|l| l.contains("health and metrics listening"))
        .unwrap_or_else(|| panic!("no listener line:\n{text}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert!(v.get("fields").is_none(), "nested fields: {line}");
    assert_eq!(v["message"], "health and metrics listening", "{line}");
    assert!(
        v["addr"].is_string(),
        "the event's fields at the top level: {line}"
    );
    assert!(
        v["level"].is_string() && v["timestamp"].is_string(),
        "{line}"
    );
}

#[test]
fn text_logs_to_a_file_carry_no_colour_codes() {
    let text = run_until("text", &[], "health and metrics listening");
    assert!(
        !text.contains('\x1b'),
        "ANSI escape codes in a file:\n{text:?}"
    );
}
