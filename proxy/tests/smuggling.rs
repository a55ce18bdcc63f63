//! The smuggling and abuse corpus: raw client bytes over TCP to the real proxy, in front of a
//! raw recording backend that keeps every byte it receives and answers each request it can
//! frame with a fixed 200. One row per case: the bytes, the statuses the client must get (in
//! order), and what may reach the backend. For every case, the backend never sees more
//! requests than the client sent, nor a request the client only smuggled inside another
//! (its path says `smuggled`).
//!
//! Cases hyper itself refuses keep hyper's bare 400 and must reach nothing either.
//!
//! `cargo test -p tollgate-proxy --test smuggling -- --nocapture` prints the summary line.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::*;

// ---------------------------------------------------------------------------------------------
// The recording backend

#[derive(Debug, Default)]
struct Seen {
    /// Every byte received, over all connections.
    bytes: usize,
    /// The request line of every request it could frame completely (and answered).
    requests: Vec<String>,
    /// Connections that ended in the middle of a request (head or body cut off).
    aborted: usize,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Seen>>);

impl Recorder {
    fn with<R>(&self, f: impl FnOnce(&mut Seen) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
    fn snapshot(&self) -> (usize, usize, usize) {
        self.with(|s| (s.bytes, s.requests.len(), s.aborted))
    }
}

/// Where one request ends in `buf` (head and body, as the backend frames it), `Err` when the
/// framing is not one a backend would accept, `Ok(None)` while incomplete.
fn frame(buf: &[u8]) -> Result<Option<(usize, String)>, ()> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ())?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| ())?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
            if !chunked {
                return Err(());
            }
        }
    }
    if chunked {
        let mut at = head_end;
        loop {
            let Some(nl) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            let size_text = std::str::from_utf8(&buf[at..at + nl]).map_err(|_| ())?;
            let size_text = size_text.split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| ())?;
            at += nl + 2;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let Some(nl) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                        return Ok(None);
                    };
                    at += nl + 2;
                    if nl == 0 {
                        return Ok(Some((at, request_line)));
                    }
                }
            }
            if buf.len() < at + size + 2 {
                return Ok(None);
            }
            if &buf[at + size..at + size + 2] != b"\r\n" {
                return Err(());
            }
            at += size + 2;
        }
    }
    let end = head_end + length.unwrap_or(0);
    Ok((buf.len() >= end).then_some((end, request_line)))
}

async fn record_connection(mut stream: TcpStream, seen: Recorder) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    seen.with(|s| s.aborted += 1);
                }
                return;
            }
            Ok(n) => n,
        };
        seen.with(|s| s.bytes += n);
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match frame(&buf) {
                Ok(Some((end, request_line))) => {
                    seen.with(|s| s.requests.push(request_line));
                    buf.drain(..end);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(()) => {
                    seen.with(|s| s.aborted += 1);
                    return;
                }
            }
        }
    }
}

async fn recording_backend() -> (String, Recorder) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Recorder::default();
    let recorder = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(record_connection(stream, recorder.clone()));
        }
    });
    (url, seen)
}

// ---------------------------------------------------------------------------------------------
// The client side

/// Send `bytes` on a fresh connection (half-closing it after when `close`), and return every
/// response read until the proxy closes or stays quiet for a moment, each as its status and,
/// when it is a problem body, its type: `"400 bad-host"`, or `"400"` for hyper's bare answer.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8], close: bool) -> Vec<String> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    if close {
        let _ = stream.shutdown().await;
    }
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_millis(700), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&out);
    // Responses follow each other without a separator (a body need not end in CRLF).
    let starts: Vec<usize> = text.match_indices("HTTP/1.").map(|(i, _)| i).collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(text.len());
            let response = &text[start..end];
            let status = response.get(9..12).unwrap_or("???");
            match response.split_once("tollgate.dev/problems/") {
                Some((_, rest)) => {
                    format!("{status} {}", rest.split('"').next().unwrap_or_default())
                }
                None => status.to_string(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The corpus

/// What the backend may see of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Not one byte.
    Nothing,
    /// No complete request: at most the head and part of the body of one that was then
    /// aborted (whether the head was flushed before the body failed is a matter of timing).
    Cut,
    /// Exactly this many complete requests.
    Whole(usize),
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// Half-close the connection after writing (a client that stops sending).
    close: bool,
    /// Requests the client sent (the most the backend may see).
    sent: usize,
    /// `"<status> <problem type>"`, or the bare status where hyper answers by itself.
    answers: &'static [&'static str],
    reach: Reach,
}

const HEAD: &str = "Host: api.example\r\nX-Subscription-Key: gold-primary-key-0123456789\r\n";

/// `POST /weather/alerts` with the test key, `extra` header lines (each ending in CRLF), then
/// `rest` (the body and anything after it).
fn post(extra: &str, rest: &str) -> Vec<u8> {
    format!("POST /weather/alerts HTTP/1.1\r\n{HEAD}{extra}\r\n{rest}").into_bytes()
}

/// As [`post`], asking the proxy to close after answering.
fn post_close(extra: &str, rest: &str) -> Vec<u8> {
    post(&format!("{extra}Connection: close\r\n"), rest)
}

fn corpus() -> Vec<Case> {
    use Reach::*;
    let chunked_hello = "5\r\nhello\r\n0\r\n\r\n";
    let case = |name, bytes, answers, reach| Case {
        name,
        bytes,
        close: false,
        sent: 1,
        answers,
        reach,
    };
    let closing = |name, bytes, answers, reach| Case {
        close: true,
        ..case(name, bytes, answers, reach)
    };
    vec![
        // Control: a plain request passes.
        case("plain POST with a length", post_close("Content-Length: 5\r\n", "hello"), &["200"], Whole(1)),
        case("plain chunked POST", post_close("Transfer-Encoding: chunked\r\n", chunked_hello), &["200"], Whole(1)),
        // Defect 3: transfer codings.
        case("TE gzip, chunked", post_close("Transfer-Encoding: gzip, chunked\r\n", chunked_hello), &["501 unsupported-transfer-coding"], Nothing),
        case("TE chunked, chunked", post_close("Transfer-Encoding: chunked, chunked\r\n", chunked_hello), &["400 bad-framing"], Nothing),
        case("TE chunked on two lines", post_close("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", chunked_hello), &["400 bad-framing"], Nothing),
        case("TE gzip then chunked on two lines", post_close("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", chunked_hello), &["400 bad-framing"], Nothing),
        case("TE chunked not last (hyper)", post_close("Transfer-Encoding: chunked, gzip\r\n", chunked_hello), &["400"], Nothing),
        case("TE empty element", post_close("Transfer-Encoding: , chunked\r\n", chunked_hello), &["400 bad-framing"], Nothing),
        case("TE empty value (hyper)", post_close("Transfer-Encoding: \r\n", chunked_hello), &["400"], Nothing),
        case("TE chunked with a parameter (hyper)", post_close("Transfer-Encoding: chunked;q=1\r\n", chunked_hello), &["400"], Nothing),
        // Defect 4: Host.
        case(
            "two Host lines",
            b"GET /weather/current HTTP/1.1\r\nHost: open.example\r\nHost: secure.example\r\nX-Subscription-Key: gold-primary-key-0123456789\r\nConnection: close\r\n\r\n".to_vec(),
            &["400 bad-host"],
            Nothing,
        ),
        case(
            "no Host on HTTP/1.1",
            b"GET /weather/current HTTP/1.1\r\nX-Subscription-Key: gold-primary-key-0123456789\r\nConnection: close\r\n\r\n".to_vec(),
            &["400 bad-host"],
            Nothing,
        ),
        case(
            "Host port not a u16",
            b"GET /weather/current HTTP/1.1\r\nHost: api.example:99999\r\nX-Subscription-Key: gold-primary-key-0123456789\r\nConnection: close\r\n\r\n".to_vec(),
            &["400 bad-host"],
            Nothing,
        ),
        case(
            "Host with userinfo",
            b"GET /weather/current HTTP/1.1\r\nHost: user@api.example\r\nX-Subscription-Key: gold-primary-key-0123456789\r\nConnection: close\r\n\r\n".to_vec(),
            &["400 bad-host"],
            Nothing,
        ),
        case(
            "absolute-form target naming another host",
            b"GET http://other.example/weather/current HTTP/1.1\r\nHost: api.example\r\nX-Subscription-Key: gold-primary-key-0123456789\r\nConnection: close\r\n\r\n".to_vec(),
            &["400 bad-host"],
            Nothing,
        ),
        case(
            "absolute-form target naming the same host",
            b"GET http://api.example/weather/current HTTP/1.1\r\nHost: api.example\r\nX-Subscription-Key: gold-primary-key-0123456789\r\nConnection: close\r\n\r\n".to_vec(),
            &["200"],
            Whole(1),
        ),
        case(
            "HTTP/1.0 without Host",
            b"GET /weather/current HTTP/1.0\r\nX-Subscription-Key: gold-primary-key-0123456789\r\n\r\n".to_vec(),
            &["200"],
            Whole(1),
        ),
        // Defect 5: Content-Length values.
        case("CL just over i64::MAX", post_close("Content-Length: 9223372036854775808\r\n", "hello"), &["400 bad-framing"], Nothing),
        case("CL of 20 digits", post_close("Content-Length: 00000000000000000005\r\n", "hello"), &["400 bad-framing"], Nothing),
        case("CL beyond u64 (hyper)", post_close("Content-Length: 99999999999999999999999\r\n", "hello"), &["400"], Nothing),
        case("CL twice, equal", post_close("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), &["400 bad-framing"], Nothing),
        case("CL twice, different (hyper)", post_close("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), &["400"], Nothing),
        case("CL with a sign (hyper)", post_close("Content-Length: +5\r\n", "hello"), &["400"], Nothing),
        // Defect 6: the client's body breaks off after the head was forwarded.
        case("chunk size 0x5", post_close("Transfer-Encoding: chunked\r\n", "0x5\r\nhello\r\n0\r\n\r\n"), &["400 body-unreadable"], Cut),
        case("chunk size -5", post_close("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"), &["400 body-unreadable"], Cut),
        case("chunk size +5", post_close("Transfer-Encoding: chunked\r\n", "+5\r\nhello\r\n0\r\n\r\n"), &["400 body-unreadable"], Cut),
        case("chunk size of 17 hex digits", post_close("Transfer-Encoding: chunked\r\n", "10000000000000005\r\nhello\r\n0\r\n\r\n"), &["400 body-unreadable"], Cut),
        case("bad line ending after chunk data", post_close("Transfer-Encoding: chunked\r\n", "5\r\nhelloXX0\r\n\r\n"), &["400 body-unreadable"], Cut),
        closing("client closes before its Content-Length", post_close("Content-Length: 10\r\n", "hello"), &["400 body-unreadable"], Cut),
        closing("huge chunk size, then the client stops", post_close("Transfer-Encoding: chunked\r\n", "ffffffffffffffff\r\nhello"), &["400 body-unreadable"], Cut),
        // Classic smuggling shapes.
        case("CL then TE", post_close("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api.example\r\n\r\n"), &["400 conflicting-framing"], Nothing),
        case("TE then CL", post_close("Transfer-Encoding: chunked\r\nContent-Length: 40\r\n", "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api.example\r\n\r\n"), &["400 conflicting-framing"], Nothing),
        case("space before the colon (hyper)", post_close("Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", "hello"), &["400"], Nothing),
        case("TE xchunked (hyper)", post_close("Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n", "hello"), &["400"], Nothing),
        case("TE tab chunked with CL", post_close("Transfer-Encoding:\tchunked\r\nContent-Length: 5\r\n", chunked_hello), &["400 conflicting-framing"], Nothing),
        case("TE tab chunked alone", post_close("Transfer-Encoding:\tchunked\r\n", chunked_hello), &["200"], Whole(1)),
        case("TE chunked, then TE x (hyper)", post_close("Transfer-Encoding: chunked\r\nTransfer-encoding: x\r\n", chunked_hello), &["400"], Nothing),
        case("TE CHUNKED uppercase alone", post_close("Transfer-Encoding: CHUNKED\r\n", chunked_hello), &["200"], Whole(1)),
        case("TE CHUNKED uppercase with CL", post_close("Transfer-Encoding: CHUNKED\r\nContent-Length: 5\r\n", chunked_hello), &["400 conflicting-framing"], Nothing),
        case("obs-fold continuation of TE (hyper)", post_close("Transfer-Encoding: gzip,\r\n chunked\r\n", chunked_hello), &["400"], Nothing),
        case("obs-fold continuation of another field (hyper)", post_close("X-Folded: a\r\n\tb\r\nContent-Length: 5\r\n", "hello"), &["400"], Nothing),
        case("NUL in a header value (hyper)", post_close("X-Nul: a\0b\r\nContent-Length: 5\r\n", "hello"), &["400"], Nothing),
        case("bare CR in a header value (hyper)", post_close("X-Cr: a\rb\r\nContent-Length: 5\r\n", "hello"), &["400"], Nothing),
        case("HTTP/1.0 with TE (hyper)", format!("POST /weather/alerts HTTP/1.0\r\n{HEAD}Transfer-Encoding: chunked\r\n\r\n{chunked_hello}").into_bytes(), &["400"], Nothing),
        case(
            "bare LF line endings",
            b"POST /weather/alerts HTTP/1.1\nHost: api.example\nX-Subscription-Key: gold-primary-key-0123456789\nContent-Length: 5\nConnection: close\n\nhello".to_vec(),
            &["200"],
            Whole(1),
        ),
        Case {
            sent: 2,
            ..case(
                "pipelined after a body, one write",
                [
                    post("Content-Length: 5\r\n", "hello"),
                    post_close("Transfer-Encoding: chunked\r\n", chunked_hello),
                ]
                .concat(),
                &["200", "200"],
                Whole(2),
            )
        },
        Case {
            sent: 2,
            ..case(
                "a good request, then CL+TE on the same connection",
                [
                    post("Content-Length: 5\r\n", "hello"),
                    post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api.example\r\n\r\n"),
                ]
                .concat(),
                &["200", "400 conflicting-framing"],
                Whole(1),
            )
        },
        case(
            "a request in a chunked body's trailer section",
            post_close("Transfer-Encoding: chunked\r\n", "0\r\nGET /smuggled HTTP/1.1\r\nHost: api.example\r\n\r\n"),
            &["400 body-unreadable"],
            Cut,
        ),
        closing(
            "Expect: 100-continue, then no body",
            post("Content-Length: 5\r\nExpect: 100-continue\r\n", ""),
            &["100", "400 body-unreadable"],
            Cut,
        ),
        case(
            "Expect: 100-continue, then a different request instead of the body",
            post("Content-Length: 5\r\nExpect: 100-continue\r\n", "GET /smuggled HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n"),
            &["100", "200", "400"],
            Whole(1),
        ),
    ]
}

#[tokio::test]
async fn the_smuggling_corpus() {
    let (backend, seen) = recording_backend().await;
    let dir = TempDir::new("smuggling");
    dir.write(
        "products.yaml",
        &products_yaml(&backend, closed_port().await),
    );
    dir.write("plans.yaml", &plans_yaml(1));
    dir.write("subscriptions.yaml", &subscriptions_yaml());
    let gateway = start_gateway(dir.path()).await;
    let addr = gateway.proxy_addr();

    let cases = corpus();
    let (mut refused, mut forwarded, mut desyncs) = (0, 0, 0);
    let mut failures = Vec::new();
    for case in &cases {
        let before = seen.snapshot();
        let answers = exchange(addr, &case.bytes, case.close).await;
        // Let an aborted backend connection be noticed.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after = seen.snapshot();
        let (bytes, whole, aborted) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
        let smuggled = seen.with(|s| {
            s.requests[before.1..]
                .iter()
                .any(|r| r.contains("smuggled"))
        });
        let reached = match (bytes, whole) {
            (0, _) => Reach::Nothing,
            (_, 0) => Reach::Cut,
            (_, n) => Reach::Whole(n),
        };
        if whole > case.sent || smuggled {
            desyncs += 1;
        }
        if whole > 0 {
            forwarded += 1;
        } else {
            refused += 1;
        }
        let reach_ok =
            reached == case.reach || (case.reach == Reach::Cut && reached == Reach::Nothing);
        if answers != case.answers || !reach_ok || whole > case.sent || smuggled {
            failures.push(format!(
                "{}: answers {answers:?} (want {:?}), backend {reached:?} (want {:?}; {bytes} bytes, {aborted} aborted){}",
                case.name,
                case.answers,
                case.reach,
                if smuggled { ", SMUGGLED request seen" } else { "" }
            ));
        }
    }
    println!(
        "smuggling corpus: {} cases: {refused} refused, {forwarded} forwarded, {desyncs} desync",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(desyncs, 0);

    // The client's broken bodies are counted as its errors, and no answer was a 5xx.
    let metrics = send(
        &client(),
        "GET",
        &format!("http://{}/metrics", gateway.admin_addr()),
        &[],
    )
    .await
    .text();
    let body_faults = cases
        .iter()
        .filter(|c| c.answers.contains(&"400 body-unreadable"))
        .count();
    let counted: usize = metrics
        .lines()
        .find(|l| l.starts_with(r#"tollgate_client_errors_total{problem="body-unreadable"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(
        counted >= body_faults,
        "{counted} body faults counted, {body_faults} sent\n{metrics}"
    );
    // The only 5xx answers are the 501s for unknown transfer codings (RFC 9112 §6.1).
    let fives: usize = metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_requests_total") && l.contains(r#"status_class="5xx""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
        .sum();
    let not_implemented = cases
        .iter()
        .flat_map(|c| c.answers)
        .filter(|a| a.starts_with("501 "))
        .count();
    assert_eq!(fives, not_implemented, "{metrics}");
}

/// A client body that breaks off after the backend's answer has started cannot become a 400;
/// the backend request is still aborted (its connection closed), the client's connection is
/// closed, and the fault is counted as the client's.
#[tokio::test]
async fn a_body_that_breaks_off_after_the_answer_started_is_still_the_clients() {
    // A backend that answers as soon as it has a head, with a response that does not end.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = format!("http://{}", listener.local_addr().expect("addr"));
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<usize>();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut answered = false;
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
            if !answered && seen.windows(4).any(|w| w == b"\r\n\r\n") {
                answered = true;
                let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n";
                if stream.write_all(head).await.is_err() {
                    break;
                }
            }
        }
        let _ = closed_tx.send(seen.len());
    });
    let dir = TempDir::new("smuggling-late");
    dir.write(
        "products.yaml",
        &products_yaml(&backend, closed_port().await),
    );
    dir.write("plans.yaml", &plans_yaml(1));
    dir.write("subscriptions.yaml", &subscriptions_yaml());
    let gateway = start_gateway(dir.path()).await;

    let mut conn = TcpStream::connect(gateway.proxy_addr())
        .await
        .expect("connect");
    conn.write_all(&post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n"))
        .await
        .expect("write");
    // The answer starts.
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n2\r\nok\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .expect("the answer starts")
            .expect("read");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200 OK"), "{got:?}");
    // Then the body breaks off: a chunk size that is not hex.
    conn.write_all(b"zz\r\nbad\r\n").await.expect("write");

    let backend_saw = tokio::time::timeout(Duration::from_secs(5), closed_rx)
        .await
        .expect("the backend connection is closed: the upstream request was aborted")
        .expect("backend task");
    assert!(backend_saw > 0);
    // The client's connection ends too (its answer cannot be completed).
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the client connection is closed");
    let counted = eventually(Duration::from_secs(2), || async {
        let metrics = send(
            &client(),
            "GET",
            &format!("http://{}/metrics", gateway.admin_addr()),
            &[],
        )
        .await
        .text();
        metrics.contains(r#"tollgate_client_errors_total{problem="body-unreadable"} 1"#)
    })
    .await;
    assert!(counted, "the broken body is counted as the client's error");
}
