//! Starts the real binary on a free port and talks HTTP/1.1 to it over loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the backend when the test ends, pass or fail.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> (Backend, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-demo-backend"))
        .args(["--listen", "127.0.0.1:0", "--threads", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tollgate-demo-backend");
    let stdout = child.stdout.take().expect("stdout is piped");
    let backend = Backend(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("address on the first line")
        .to_string();
    (backend, addr)
}

/// Sends raw requests on one connection and returns each response's head and body.
fn exchange(stream: &mut TcpStream, request: &str) -> (String, String) {
    stream.write_all(request.as_bytes()).expect("write request");
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read head");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    let mut body = vec![0; len];
    reader.read_exact(&mut body).expect("read body");
    (head, String::from_utf8(body).expect("utf-8 body"))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn serves_routes_with_fingerprint_headers_over_keep_alive() {
    let (_backend, addr) = start();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");

    let (head, body) = exchange(
        &mut stream,
        "GET /weather/current?city=Utrecht HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-42\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "server"), Some("weather-api/1.0 (Kestrel)"));
    assert_eq!(header(&head, "x-powered-by"), Some("ASP.NET"));
    assert_eq!(header(&head, "x-aspnet-version"), Some("4.0.30319"));
    assert_eq!(header(&head, "x-request-id"), Some("req-42"));
    assert_eq!(header(&head, "x-backend-saw-key"), Some("no"));
    let json: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(json["city"], "Utrecht");

    // Same connection (keep-alive), no prefix, a key that leaked through.
    let (head, body) = exchange(
        &mut stream,
        "GET /forecast/week HTTP/1.1\r\nHost: x\r\nX-Subscription-Key: leaked\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "x-backend-saw-key"), Some("yes"));
    let json: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(json["city"], "Amsterdam");
    assert_eq!(json["forecast"].as_array().map(Vec::len), Some(7));

    let (head, _) = exchange(
        &mut stream,
        "GET /uv-index?subscription-key=leaked HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(header(&head, "x-backend-saw-key"), Some("yes"));

    let (head, body) = exchange(&mut stream, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    assert!(body.contains("not_found"));

    let (head, body) = exchange(&mut stream, "GET /bench HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, tollgate_demo_backend::BENCH_BODY);
}
