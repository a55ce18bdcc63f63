//! Real redis-server processes on loopback ports in temporary directories, killed on drop.

#![allow(dead_code)] // each test uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-redis-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn sub(&self, name: &str) -> PathBuf {
        let dir = self.0.join(name);
        std::fs::create_dir_all(&dir).expect("create sub dir");
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[path = "../../../proxy/tests/support/ports.rs"]
mod ports;
pub use ports::free_port;

/// A redis-server (or sentinel) process; SIGKILLed on drop.
pub struct Server {
    pub port: u16,
    child: Option<Child>,
    /// Extra redis-cli arguments (TLS) to reach it.
    pub cli_args: Vec<String>,
}

impl Server {
    /// `redis-server ARGS…` in `dir` (its log goes to `dir/redis.log`); waits until it answers
    /// PING on `port`.
    pub fn start(dir: &Path, port: u16, args: &[&str], cli_args: &[&str]) -> Server {
        let log = dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(args)
            .args(["--logfile", log.to_str().expect("utf-8 path")])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server (is it installed?)");
        let server = Server {
            port,
            child: Some(child),
            cli_args: cli_args.iter().map(|s| s.to_string()).collect(),
        };
        let started = Instant::now();
        while server.cli(&["PING"]).trim() != "PONG" {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on {port} did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// A plain redis-server with no persistence.
    pub fn plain(dir: &Path, extra: &[&str]) -> Server {
        Server::plain_with_cli(dir, extra, &[])
    }

    /// A plain redis-server; `cli_args` are what redis-cli needs to reach it (a password).
    pub fn plain_with_cli(dir: &Path, extra: &[&str], cli_args: &[&str]) -> Server {
        let port = free_port();
        let port_text = port.to_string();
        let mut args = vec![
            "--port",
            &port_text,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        args.extend_from_slice(extra);
        Server::start(dir, port, &args, cli_args)
    }

    /// `redis-cli -p PORT ARGS…`, stdout (errors included, as redis-cli prints them).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.cli_args)
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILL now (a crash, not a shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll `check` every 100 ms until it is true; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
