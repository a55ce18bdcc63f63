//! Malformed and hostile requests over raw TCP: each gets a precise 4xx (problem+json where the
//! proxy answers; hyper's bare status where hyper must), never a 500, and the server keeps
//! answering.

mod support;

use support::*;

fn body_of(answer: &str) -> serde_json::Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer:?}"))
}

fn assert_raw_problem(answer: &str, status: u16, slug: &str) {
    assert_eq!(raw_status(answer), status, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert_eq!(
        body_of(answer)["type"],
        format!("https://tollgate.dev/problems/{slug}")
    );
}

#[tokio::test]
async fn non_utf8_key_header_is_400_without_echoing_it() {
    let gw = TestGateway::start("bad-key").await;
    let addr = gw.gateway.proxy_addr();
    let mut req = b"GET /weather/current HTTP/1.1\r\nHost: x\r\nX-Subscription-Key: k\xff\xfek\r\nConnection: close\r\n\r\n".to_vec();
    let answer = raw(addr, &req).await;
    assert_raw_problem(&answer, 400, "invalid-key");
    assert!(!answer.contains('\u{fffd}'), "the key bytes are not echoed");
    // A control character inside the value (obs-text is allowed by HTTP, controls are not).
    req = b"GET /weather/current HTTP/1.1\r\nHost: x\r\nX-Subscription-Key: a\x01b\r\nConnection: close\r\n\r\n".to_vec();
    let status = raw_status(&raw(addr, &req).await);
    assert_eq!(status, 400);
    // Non-UTF-8 Host.
    let answer = raw(
        addr,
        b"GET /weather/current HTTP/1.1\r\nHost: caf\xe9.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_raw_problem(&answer, 400, "invalid-header");
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let gw = TestGateway::start("bad-headers").await;
    let addr = gw.gateway.proxy_addr();
    let big = "a".repeat(40 * 1024);
    let req = format!(
        "GET /weather/current HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
    );
    assert_raw_problem(&raw(addr, req.as_bytes()).await, 431, "headers-too-large");

    // 101 fields (Host + 99 + Connection): just over the bound, our precise answer.
    let many: String = (0..99).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let req =
        format!("GET /weather/current HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    assert_raw_problem(&raw(addr, req.as_bytes()).await, 431, "too-many-headers");
    // Far over it, hyper's own bare 431.
    let many: String = (0..150).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let req =
        format!("GET /weather/current HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    assert_eq!(raw_status(&raw(addr, req.as_bytes()).await), 431);

    // Far beyond hyper's buffer, hyper itself answers 431 (empty body).
    let huge = "a".repeat(400 * 1024);
    let req = format!("GET /weather/current HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\n\r\n");
    assert_eq!(raw_status(&raw(addr, req.as_bytes()).await), 431);
}

#[tokio::test]
async fn very_long_url_is_414() {
    let gw = TestGateway::start("bad-url").await;
    let addr = gw.gateway.proxy_addr();
    let path = format!("/weather/current/{}", "a".repeat(10 * 1024));
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_raw_problem(&raw(addr, req.as_bytes()).await, 414, "uri-too-long");
    // Beyond 64 KiB, hyper answers 414 itself.
    let path = format!("/{}", "a".repeat(70 * 1024));
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let status = raw_status(&raw(addr, req.as_bytes()).await);
    assert!(status == 414 || status == 431, "{status}");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400() {
    let gw = TestGateway::start("bad-framing").await;
    let addr = gw.gateway.proxy_addr();
    for req in [
        &b"POST /weather/alerts HTTP/1.1\r\nHost: x\r\nX-Subscription-Key: gold-primary-key-0123456789\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        &b"POST /weather/alerts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"[..],
    ] {
        let answer = raw(addr, req).await;
        assert_raw_problem(&answer, 400, "conflicting-framing");
    }
    // The smuggling shape after a good request on the same connection.
    let pipelined = b"GET /weather/current HTTP/1.1\r\nHost: x\r\nX-Subscription-Key: gold-primary-key-0123456789\r\n\r\nPOST /weather/alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let answer = raw(addr, pipelined).await;
    let statuses: Vec<u16> = answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| answer[i + 9..i + 12].parse().ok())
        .collect();
    assert_eq!(statuses, [200, 400], "{answer}");
    assert_eq!(
        gw.upstream.count(),
        1,
        "the smuggling request never reached the backend"
    );
}

#[tokio::test]
async fn dangerous_paths_are_400() {
    let gw = TestGateway::start("bad-path").await;
    let addr = gw.gateway.proxy_addr();
    for path in [
        "/weather/../admin",
        "/weather/current/%2e%2e/x",
        "/weather%2Fcurrent",
        "/weather/./current",
        // Forms a servlet container (`;`-parameters dropped) or a backend that decodes once
        // more reads as `..`: routed as `current`, each would reach the backend's `forecast`
        // with a key whose plan (free) only includes `current`.
        "/weather/current/..;/forecast",
        "/weather/current/..;x=1/forecast",
        "/weather/current/%2e%2e;/forecast",
        "/weather/current/..%3b/forecast",
        "/weather/current/%252e%252e/forecast",
        "/weather/current/.;/x",
        "/weather/current/%2e;x=1/x",
        "/weather/current%252fx",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Subscription-Key: {FREE_KEY}\r\nConnection: close\r\n\r\n");
        assert_raw_problem(&raw(addr, req.as_bytes()).await, 400, "bad-path");
    }
    assert_eq!(gw.upstream.count(), 0);
}

/// `;`-parameters and names that only start like a dot-segment are ordinary paths: routed and
/// forwarded verbatim.
#[tokio::test]
async fn paths_that_merely_look_like_dot_segments_are_forwarded_verbatim() {
    let gw = TestGateway::start("ok-path").await;
    for path in [
        "/weather/current/a;b/c",
        "/weather/current/items;version=2",
        "/weather/current/..foo",
        "/weather/current/%2e%2efoo",
        "/weather/current/.well-known/x",
    ] {
        let r = gw.get_with_key(path, GOLD_PRIMARY).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["path"], format!("/backend{path}"), "{path}");
    }
}

#[tokio::test]
async fn garbage_never_gets_a_500_and_the_server_keeps_answering() {
    let gw = TestGateway::start("garbage").await;
    let addr = gw.gateway.proxy_addr();
    for junk in [
        &b"\x00\x01\x02\x03\r\n\r\n"[..],
        &b"GET\r\n\r\n"[..],
        &b"GET / HTTP/9.9\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
    ] {
        let answer = raw(addr, junk).await;
        if !answer.is_empty() {
            let status = raw_status(&answer);
            assert!((400..500).contains(&status), "{status} for {junk:?}");
        }
    }
    assert_eq!(
        gw.get_with_key("/weather/current", GOLD_PRIMARY)
            .await
            .status,
        200
    );
}
