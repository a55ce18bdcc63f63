//! Request validation (ApiPolicy `requestValidation`) through the real gateway to a real
//! upstream: content types (415), body size (413, with and without Content-Length), JSON
//! limits checked while streaming (JSON bombs refused before the backend sees a byte, with
//! memory bounded), JSON Schema (422), and valid bodies forwarded byte for byte.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_proxy::Gateway;

use support::{client, start_gateway, TempDir, TestResponse, Upstream};

const SCHEMA: &str = r#"{"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}, "note": {"type": "string", "maxLength": 20}}}"#;

fn manifests(upstream: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: orders, namespace: t}}
spec:
  basePath: /orders
  backend: {{url: "{upstream}"}}
  subscriptionRequired: false
  policies: [json-checks, typed, upload-limit]
  routes:
    - {{name: create, path: /create, methods: [POST]}}
    - {{name: typed,  path: /typed,  methods: [POST]}}
    - {{name: upload, path: /upload, methods: [POST, PUT]}}
    - {{name: free,   path: /free,   methods: [POST]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: sluggish, namespace: t}}
spec:
  basePath: /sluggish
  backend: {{url: "{upstream}"}}
  subscriptionRequired: false
  timeouts: {{request: 400ms}}
  policies: [json-checks]
  routes:
    - {{name: create, path: /create, methods: [POST]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: json-checks, namespace: t}}
spec:
  requestValidation:
    routes: [create]
    contentTypes: [application/json]
    maxBodyBytes: 67108864
    json: {{maxDepth: 32, maxObjectMembers: 100, maxArrayLength: 10000, maxStringLength: 65536}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: typed, namespace: t}}
spec:
  requestValidation:
    routes: [typed]
    contentTypes: [application/json, application/*]
    maxBodyBytes: 4096
    jsonSchema: '{SCHEMA}'
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: upload-limit, namespace: t}}
spec:
  requestValidation:
    routes: [upload]
    maxBodyBytes: 1000
"#
    )
}

struct Setup {
    gw: Gateway,
    upstream: Upstream,
    _dir: TempDir,
}

async fn setup(tag: &str) -> Setup {
    let upstream = Upstream::start().await;
    let dir = TempDir::new(tag);
    dir.write("all.yaml", &manifests(&upstream.url()));
    let gw = start_gateway(dir.path()).await;
    let rt = gw.shared().runtime.load_full();
    let rt = rt.expect("the manifests load");
    assert_eq!(
        rt.products.len(),
        2,
        "both products compile: {:?}",
        rt.diagnostics()
    );
    assert!(rt.diagnostics().is_empty(), "{:?}", rt.diagnostics());
    Setup {
        gw,
        upstream,
        _dir: dir,
    }
}

impl Setup {
    fn addr(&self) -> SocketAddr {
        self.gw.proxy_addr()
    }

    async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let mut builder = Request::builder()
            .method("POST")
            .uri(format!("http://{}{path}", self.addr()));
        for (n, v) in headers {
            builder = builder.header(*n, *v);
        }
        let req = builder.body(Full::new(body.into())).expect("request");
        let resp = client().request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn post_json(&self, path: &str, body: impl Into<Bytes>) -> TestResponse {
        self.post(path, &[("content-type", "application/json")], body)
            .await
    }
}

/// What a raw streamed request saw.
struct Streamed {
    status: u16,
    body: String,
    /// Body bytes the client had written when the answer arrived.
    written_at_answer: u64,
}

/// The filler of a streamed body: `total` bytes made of `prefix`, then `fill` repeated, then
/// `suffix`; generated chunk by chunk so the test itself holds almost nothing.
struct Filler {
    prefix: &'static [u8],
    fill: u8,
    suffix: &'static [u8],
    total: u64,
}

/// POST `filler` to `path` on a fresh connection, chunked (or with `Content-Length` when
/// `declare` is set), reading the answer while still writing.
async fn stream_post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    declare: bool,
    filler: Filler,
) -> Streamed {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let framing = if declare {
        format!("content-length: {}", filler.total)
    } else {
        "transfer-encoding: chunked".to_string()
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: api.test\r\ncontent-type: {content_type}\r\n{framing}\r\n\r\n"
    );
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![filler.fill; 64 * 1024];
        let fixed = (filler.prefix.len() + filler.suffix.len()) as u64;
        let mut left = filler.total - fixed;
        write_part(&mut wr, filler.prefix, declare, &counter).await?;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            write_part(&mut wr, &chunk[..n], declare, &counter).await?;
            left -= n as u64;
        }
        write_part(&mut wr, filler.suffix, declare, &counter).await?;
        if !declare {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        // Dropping the write half would half-close the connection, which hyper takes as the
        // client going away: keep it open until the answer has been read (then aborted).
        std::future::pending::<()>().await;
        Ok::<(), std::io::Error>(())
    });
    let answer = tokio::time::timeout(Duration::from_secs(30), read_response(&mut rd))
        .await
        .expect("an answer within 30 s");
    let written_at_answer = written.load(Ordering::SeqCst);
    writer.abort();
    let (status, body) = answer;
    Streamed {
        status,
        body,
        written_at_answer,
    }
}

/// Write `data` as is (`declared` length) or as one chunk; count it once written.
async fn write_part(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    data: &[u8],
    declared: bool,
    counter: &AtomicU64,
) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if declared {
        wr.write_all(data).await?;
    } else {
        wr.write_all(format!("{:x}\r\n", data.len()).as_bytes())
            .await?;
        wr.write_all(data).await?;
        wr.write_all(b"\r\n").await?;
    }
    counter.fetch_add(data.len() as u64, Ordering::SeqCst);
    Ok(())
}

/// Read one HTTP/1.1 response with a Content-Length body.
async fn read_response(rd: &mut tokio::net::tcp::OwnedReadHalf) -> (u16, String) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = rd.read(&mut tmp).await.expect("read answer");
        assert!(
            n > 0,
            "connection closed before an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = support::raw_status(&head);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = rd.read(&mut tmp).await.expect("read body");
        assert!(n > 0, "connection closed inside the answer");
        buf.extend_from_slice(&tmp[..n]);
    }
    (
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned(),
    )
}

fn problem(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn assert_problem(status: u16, body: &str, expected_status: u16, slug: &str) -> serde_json::Value {
    assert_eq!(status, expected_status, "{body}");
    let v = problem(body);
    assert_eq!(
        v["type"],
        format!("https://tollgate.dev/problems/{slug}"),
        "{v}"
    );
    v
}

/// Resident and peak memory of this process (the gateway runs in it), in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn json_bombs_are_refused_before_the_backend_with_bounded_memory() {
    let s = setup("bombs").await;
    let (rss_before, hwm_before) = memory_kib();

    // 10k-deep nesting, in one Content-Length body.
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let r = s.post_json("/orders/create", deep).await;
    let v = r.assert_problem(400, "json-limit-exceeded");
    let detail = v["detail"].as_str().expect("detail");
    assert!(
        detail.contains("maxDepth") && detail.contains("32"),
        "{detail}"
    );

    // A 1M-element array (2 MB), streamed chunked.
    let streamed = stream_pattern(s.addr(), "/orders/create", b"[", b"0,", 1_000_000, b"0]").await;
    let v = assert_problem(streamed.status, &streamed.body, 400, "json-limit-exceeded");
    let detail = v["detail"].as_str().expect("detail");
    assert!(
        detail.contains("maxArrayLength") && detail.contains("10000"),
        "{detail}"
    );

    // A 50 MB string, streamed chunked: refused once it passes 64 KiB.
    let total = 50 * 1024 * 1024;
    let streamed = stream_post(
        s.addr(),
        "/orders/create",
        "application/json",
        false,
        Filler {
            prefix: b"{\"a\": \"",
            fill: b'x',
            suffix: b"\"}",
            total,
        },
    )
    .await;
    let v = assert_problem(streamed.status, &streamed.body, 400, "json-limit-exceeded");
    let detail = v["detail"].as_str().expect("detail");
    assert!(
        detail.contains("maxStringLength") && detail.contains("65536"),
        "{detail}"
    );
    assert!(!streamed.body.contains("xxxx"), "the body is never echoed");
    println!(
        "50 MB string: answered after {} bytes written by the client",
        streamed.written_at_answer
    );
    assert!(
        streamed.written_at_answer < total / 2,
        "the gateway answered before the client finished sending ({} of {total} bytes written)",
        streamed.written_at_answer
    );

    assert_eq!(s.upstream.count(), 0, "the backend saw none of them");
    let (rss_after, hwm_after) = memory_kib();
    let rss_growth = rss_after.saturating_sub(rss_before);
    let hwm_growth = hwm_after.saturating_sub(hwm_before);
    println!(
        "memory: VmRSS {rss_before} -> {rss_after} KiB (+{rss_growth}), VmHWM {hwm_before} -> {hwm_after} KiB (+{hwm_growth})"
    );
    assert!(rss_growth < 20 * 1024, "VmRSS grew by {rss_growth} KiB");
    assert!(hwm_growth < 20 * 1024, "VmHWM grew by {hwm_growth} KiB");
}

/// POST `prefix` + `pattern` × `count` + `suffix`, chunked, reading the answer while writing.
async fn stream_pattern(
    addr: SocketAddr,
    path: &str,
    prefix: &'static [u8],
    pattern: &'static [u8],
    count: usize,
    suffix: &'static [u8],
) -> Streamed {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: api.test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let per_chunk = (64 * 1024 / pattern.len()).max(1);
        let mut left = count;
        let mut first = true;
        while left > 0 || first {
            let n = left.min(per_chunk);
            let mut data = Vec::with_capacity(n * pattern.len() + prefix.len());
            if first {
                data.extend_from_slice(prefix);
                first = false;
            }
            for _ in 0..n {
                data.extend_from_slice(pattern);
            }
            left -= n;
            if left == 0 {
                data.extend_from_slice(suffix);
            }
            let mut f = format!("{:x}\r\n", data.len()).into_bytes();
            f.extend_from_slice(&data);
            f.extend_from_slice(b"\r\n");
            wr.write_all(&f).await?;
            counter.fetch_add(data.len() as u64, Ordering::SeqCst);
        }
        wr.write_all(b"0\r\n\r\n").await?;
        std::future::pending::<()>().await;
        Ok::<(), std::io::Error>(())
    });
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), read_response(&mut rd))
        .await
        .expect("an answer within 30 s");
    let written_at_answer = written.load(Ordering::SeqCst);
    writer.abort();
    Streamed {
        status,
        body,
        written_at_answer,
    }
}

#[tokio::test]
async fn valid_json_is_forwarded_byte_identical() {
    let s = setup("valid").await;
    let doc = "{ \"name\" : \"h\u{e9}llo \u{1F600}\", \"esc\": \"a\\\"b\\u00e9\\n\",\n  \"n\": [1, -2.5e3, true, null, {}] }\n";
    let r = s.post_json("/orders/create", doc).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let echoed = r.json();
    assert_eq!(echoed["body"], doc);
    assert_eq!(
        echoed["headers"]["content-length"][0],
        doc.len().to_string()
    );
    assert_eq!(s.upstream.count(), 1);

    // The same document streamed in small chunks arrives whole too.
    let streamed = stream_pattern(s.addr(), "/orders/create", b"[", b"1,", 5000, b"2]").await;
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let echoed = problem(&streamed.body);
    let expected = format!("[{}2]", "1,".repeat(5000));
    assert_eq!(echoed["body"], expected);
    assert_eq!(s.upstream.count(), 2);
}

#[tokio::test]
async fn oversized_bodies_are_413_with_and_without_content_length() {
    let s = setup("too-large").await;

    // Size-only route (1000 bytes): a declared length over the limit is refused unread.
    let r = s
        .post(
            "/orders/upload",
            &[("content-type", "application/octet-stream")],
            vec![b'a'; 1001],
        )
        .await;
    let v = r.assert_problem(413, "body-too-large");
    assert!(
        v["detail"].as_str().is_some_and(|d| d.contains("1000")),
        "{v}"
    );
    assert_eq!(s.upstream.count(), 0);

    // A declared 100 MB body: refused before the client has sent most of it.
    let total = 100 * 1024 * 1024;
    let streamed = stream_post(
        s.addr(),
        "/orders/upload",
        "application/octet-stream",
        true,
        Filler {
            prefix: b"",
            fill: b'a',
            suffix: b"",
            total,
        },
    )
    .await;
    assert_problem(streamed.status, &streamed.body, 413, "body-too-large");
    assert!(streamed.written_at_answer < total / 2);
    assert_eq!(s.upstream.count(), 0);

    // At the limit it streams through untouched.
    let r = s
        .post(
            "/orders/upload",
            &[("content-type", "application/octet-stream")],
            vec![b'a'; 1000],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["body"].as_str().map(str::len), Some(1000));

    // Without a length: counted while streaming; the client gets 413.
    let streamed = stream_pattern(s.addr(), "/orders/upload", b"", b"abcdefgh", 10_000, b"").await;
    assert_problem(streamed.status, &streamed.body, 413, "body-too-large");
    let streamed = stream_pattern(s.addr(), "/orders/upload", b"", b"abcdefgh", 100, b"").await;
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    assert_eq!(problem(&streamed.body)["body"], "abcdefgh".repeat(100));

    // JSON route (64 MiB cap): a declared length over the cap is refused at once.
    let streamed = stream_post(
        s.addr(),
        "/orders/create",
        "application/json",
        true,
        Filler {
            prefix: b"[",
            fill: b'1',
            suffix: b"]",
            total: 64 * 1024 * 1024 + 1,
        },
    )
    .await;
    assert_problem(streamed.status, &streamed.body, 413, "body-too-large");
    assert!(streamed.written_at_answer < 32 * 1024 * 1024);
}

#[tokio::test]
async fn oversized_json_without_length_is_413_before_the_backend() {
    let s = setup("too-large-json").await;
    // The schema route holds at most 4096 bytes; 8 KB of valid JSON, chunked.
    let streamed = stream_pattern(
        s.addr(),
        "/orders/typed",
        b"{\"id\": 1, \"pad\": [",
        b"1,",
        4000,
        b"1]}",
    )
    .await;
    assert_problem(streamed.status, &streamed.body, 413, "body-too-large");
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    let s = setup("media").await;
    let r = s
        .post("/orders/create", &[("content-type", "text/plain")], "{}")
        .await;
    let v = r.assert_problem(415, "unsupported-media-type");
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("application/json")),
        "{v}"
    );
    let r = s.post("/orders/create", &[], "{}").await;
    r.assert_problem(415, "unsupported-media-type");
    let r = s
        .post(
            "/orders/create",
            &[("content-type", "application/problem+json")],
            "{}",
        )
        .await;
    r.assert_problem(415, "unsupported-media-type");
    // A compressed body is not inflated: refused.
    let r = s
        .post(
            "/orders/create",
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            "{}",
        )
        .await;
    r.assert_problem(415, "encoded-body");
    assert_eq!(s.upstream.count(), 0);

    // Parameters and case do not matter; a wildcard range matches its subtypes.
    let r = s
        .post(
            "/orders/create",
            &[("content-type", "Application/JSON; charset=utf-8")],
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = s
        .post(
            "/orders/typed",
            &[("content-type", "application/merge-patch+json")],
            r#"{"id": 1}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(s.upstream.count(), 2);
}

#[tokio::test]
async fn schema_violations_are_422_naming_the_path_only() {
    let s = setup("schema").await;
    let r = s
        .post_json("/orders/typed", r#"{"id": "secret-text-123"}"#)
        .await;
    let v = r.assert_problem(422, "schema-violation");
    let detail = v["detail"].as_str().expect("detail");
    assert!(
        detail.contains("/id") && detail.contains("type"),
        "{detail}"
    );
    assert!(
        !r.text().contains("secret-text-123"),
        "the value is never echoed"
    );
    let r = s.post_json("/orders/typed", r#"{"note": "x"}"#).await;
    let v = r.assert_problem(422, "schema-violation");
    assert!(
        v["detail"].as_str().is_some_and(|d| d.contains("required")),
        "{v}"
    );
    assert_eq!(s.upstream.count(), 0);

    // Not JSON at all: 400 with the offset.
    let r = s.post_json("/orders/typed", r#"{"id": 1,}"#).await;
    let v = r.assert_problem(400, "invalid-json");
    assert!(
        v["detail"].as_str().is_some_and(|d| d.contains("byte 9")),
        "{v}"
    );
    let r = s.post_json("/orders/create", "").await;
    // An empty body has nothing to check (no body is not a JSON document to refuse).
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let r = s
        .post_json("/orders/typed", r#"{"id": 7, "note": "fine"}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["body"], r#"{"id": 7, "note": "fine"}"#);
}

#[tokio::test]
async fn routes_not_named_are_not_validated() {
    let s = setup("unnamed").await;
    let deep = "[".repeat(10_000);
    let r = s
        .post(
            "/orders/free",
            &[("content-type", "text/plain")],
            deep.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["body"], deep);
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test]
async fn a_body_that_stalls_is_408() {
    let s = setup("stall").await;
    // The sluggish product's request timeout (400 ms) also bounds reading a held body.
    let mut stream = TcpStream::connect(s.addr()).await.expect("connect");
    stream
        .write_all(b"POST /sluggish/create HTTP/1.1\r\nhost: api.test\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n{\"a\":")
        .await
        .expect("write");
    let (mut rd, _wr) = stream.into_split();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut rd))
        .await
        .expect("answered");
    assert_problem(status, &body, 408, "body-timeout");
    assert_eq!(s.upstream.count(), 0);
}
