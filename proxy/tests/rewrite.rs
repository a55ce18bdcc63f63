//! Response rewrite over real sockets: buffered bodies with a corrected `Content-Length`,
//! chunked bodies whose matches straddle chunk boundaries, gzip bodies, and bodies that must
//! pass untouched.

mod support;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use support::*;

const INTERNAL: &str = "http://weather-api.internal";
const PUBLIC: &str = "https://api.example.com";

/// A body fed from a channel: each message is one chunk on the wire.
struct ChanBody(mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

type UpBody = Either<Full<Bytes>, ChanBody>;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

const JSON_BODY: &str = r#"{"self":"http://weather-api.internal/v1/current","links":["http://weather-api.internal/v1/forecast","internal-host:8080"]}"#;
const PNG_BODY: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00http://weather-api.internal\xff\xfe\x00";

/// Pieces of the chunked body: the first pattern is split inside, the second between its ':'
/// and '/'.
const PIECES: [&str; 4] = [
    r#"{"next":"http"#,
    "://weather-api.inter",
    r#"nal/x","other":"http:"#,
    r#"//weather-api.internal/y"}"#,
];

/// Request headers the fixture upstream saw, per path.
type Seen = Arc<Mutex<Vec<(String, HeaderMap)>>>;

async fn fixture(req: Request<Incoming>, seen: Seen) -> Result<Response<UpBody>, Infallible> {
    // The gateway forwards the full path (`/rw/...`); the fixture serves by the last part.
    let path = req.uri().path();
    let path = path.strip_prefix("/rw").unwrap_or(path).to_string();
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((path.clone(), req.headers().clone()));
    let full = |ct: &str, body: Vec<u8>| {
        let mut r = Response::new(Either::Left(Full::new(Bytes::from(body))));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_str(ct).expect("ct"));
        r
    };
    let resp = match path.as_str() {
        "/json" => {
            let mut r = full("application/json; charset=utf-8", JSON_BODY.into());
            let h = r.headers_mut();
            h.insert("etag", HeaderValue::from_static("\"v1\""));
            h.insert(
                "content-md5",
                HeaderValue::from_static("bm90LXJlYWxseS1tZDU="),
            );
            h.insert("accept-ranges", HeaderValue::from_static("bytes"));
            r
        }
        "/chunked" => {
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                for p in PIECES {
                    if tx.send(Bytes::from_static(p.as_bytes())).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            });
            let mut r = Response::new(Either::Right(ChanBody(rx)));
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("text/plain"));
            r
        }
        "/gzip" => {
            let mut r = full("application/json", gzip(JSON_BODY.as_bytes()));
            let h = r.headers_mut();
            h.insert("content-encoding", HeaderValue::from_static("gzip"));
            h.insert("etag", HeaderValue::from_static("\"gz1\""));
            h.insert("vary", HeaderValue::from_static("Accept-Encoding"));
            r
        }
        "/gzip-chunked" => {
            // The compressed stream in small frames, so inflation and matching both span them.
            let z = gzip(JSON_BODY.repeat(50).as_bytes());
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                for c in z.chunks(37) {
                    if tx.send(Bytes::copy_from_slice(c)).await.is_err() {
                        return;
                    }
                }
            });
            let mut r = Response::new(Either::Right(ChanBody(rx)));
            let h = r.headers_mut();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            h.insert("content-encoding", HeaderValue::from_static("gzip"));
            r
        }
        "/brotli" => {
            let mut r = full(
                "application/json",
                b"not-really-br http://weather-api.internal".to_vec(),
            );
            r.headers_mut()
                .insert("content-encoding", HeaderValue::from_static("br"));
            r
        }
        "/gzip-corrupt" => {
            // A valid gzip header, then garbage, streamed: the gateway has already sent its
            // headers when it finds out.
            let (tx, rx) = mpsc::channel(2);
            tokio::spawn(async move {
                let mut z = gzip(JSON_BODY.as_bytes());
                z.truncate(12);
                let _ = tx.send(Bytes::from(z)).await;
                let _ = tx.send(Bytes::from_static(&[0xff; 64])).await;
            });
            let mut r = Response::new(Either::Right(ChanBody(rx)));
            let h = r.headers_mut();
            h.insert("content-type", HeaderValue::from_static("text/html"));
            h.insert("content-encoding", HeaderValue::from_static("gzip"));
            r
        }
        "/png" => full("image/png", PNG_BODY.to_vec()),
        "/big" => {
            // Over the buffering bound: streamed, so no Content-Length can be promised.
            let line = format!("{INTERNAL}/item ");
            full(
                "text/plain",
                line.repeat(1_200_000 / line.len() + 1).into_bytes(),
            )
        }
        _ => full("text/plain", b"none".to_vec()),
    };
    Ok(resp)
}

async fn start_fixture() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| fixture(req, s.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn manifests(upstream: SocketAddr) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: rw, namespace: t}}
spec:
  basePath: /rw
  backend: {{url: "http://{upstream}"}}
  subscriptionRequired: false
  routes:
    - {{name: all, path: /}}
  policies: [hide-internal, hide-port]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: hide-internal, namespace: t}}
spec:
  responseRewrite:
    - {{from: "{INTERNAL}", to: "{PUBLIC}"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: hide-port, namespace: t}}
spec:
  responseRewrite:
    - {{from: "internal-host:8080", to: "api.example.com"}}
"#
    )
}

struct Env {
    gateway: tollgate_proxy::Gateway,
    seen: Seen,
    client: HttpClient,
    _dir: TempDir,
}

impl Env {
    async fn start(tag: &str) -> Env {
        let (addr, seen) = start_fixture().await;
        let dir = TempDir::new(tag);
        dir.write("api.yaml", &manifests(addr));
        let gateway = start_gateway(dir.path()).await;
        assert!(gateway.shared().runtime.load().is_some(), "manifests load");
        Env {
            gateway,
            seen,
            client: client(),
            _dir: dir,
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        let url = format!("http://{}{path}", self.gateway.proxy_addr());
        send(&self.client, "GET", &url, headers).await
    }

    fn seen(&self, path: &str) -> HeaderMap {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| panic!("upstream never saw {path}"))
    }
}

fn expected_json() -> String {
    JSON_BODY
        .replace(INTERNAL, PUBLIC)
        .replace("internal-host:8080", "api.example.com")
}

#[tokio::test]
async fn buffered_body_is_rewritten_with_a_corrected_content_length() {
    let env = Env::start("rw-buffered").await;
    let r = env.get("/rw/json", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), expected_json());
    assert_ne!(r.text().len(), JSON_BODY.len(), "the length really changed");
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(r.header("etag"), Some("W/\"v1\""), "strong ETag weakened");
    assert!(r.header("content-md5").is_none());
    assert!(r.header("accept-ranges").is_none());
}

#[tokio::test]
async fn matches_across_chunk_boundaries_are_found() {
    let env = Env::start("rw-chunks").await;
    let r = env.get("/rw/chunked", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        format!(r#"{{"next":"{PUBLIC}/x","other":"{PUBLIC}/y"}}"#)
    );
    assert!(r.header("content-length").is_none());
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
}

#[tokio::test]
async fn gzip_body_is_inflated_rewritten_and_sent_uncompressed() {
    let env = Env::start("rw-gzip").await;
    let r = env
        .get("/rw/gzip", &[("accept-encoding", "br, gzip, zstd")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The upstream was offered only what the gateway can decode.
    assert_eq!(env.seen("/gzip")["accept-encoding"], "gzip");
    assert!(r.header("content-encoding").is_none(), "{:?}", r.headers);
    assert_eq!(r.text(), expected_json());
    let framed = r.header("transfer-encoding") == Some("chunked")
        || r.header("content-length") == Some(r.body.len().to_string().as_str());
    assert!(framed, "chunked or a correct length: {:?}", r.headers);
    assert_eq!(r.header("etag"), Some("W/\"gz1\""));

    let r = env
        .get("/rw/gzip-chunked", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-encoding").is_none());
    assert_eq!(r.text(), expected_json().repeat(50));

    // A client that does not take gzip: the backend is asked for identity.
    let r = env.get("/rw/json", &[("accept-encoding", "br")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(env.seen("/json")["accept-encoding"], "identity");
}

#[tokio::test]
async fn other_encodings_and_non_textual_bodies_pass_untouched() {
    let env = Env::start("rw-untouched").await;
    let r = env.get("/rw/png", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], PNG_BODY, "byte for byte");
    assert_eq!(
        r.header("content-length"),
        Some(PNG_BODY.len().to_string().as_str())
    );

    let r = env.get("/rw/brotli", &[("accept-encoding", "br")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.text(), "not-really-br http://weather-api.internal");
}

#[tokio::test]
async fn large_bodies_stream_and_ranges_are_not_forwarded() {
    let env = Env::start("rw-big").await;
    let r = env.get("/rw/big", &[("range", "bytes=0-99")]).await;
    assert_eq!(r.status, 200);
    assert!(env.seen("/big").get("range").is_none());
    assert!(r.header("content-length").is_none());
    let text = r.text();
    assert!(text.len() > 1_000_000);
    assert!(!text.contains(INTERNAL));
    let line = format!("{INTERNAL}/item ");
    let lines = 1_200_000 / line.len() + 1;
    assert_eq!(text.matches(PUBLIC).count(), lines);
    assert_eq!(text, format!("{PUBLIC}/item ").repeat(lines));
}

#[tokio::test]
async fn head_requests_get_no_stale_length() {
    let env = Env::start("rw-head").await;
    let url = format!("http://{}/rw/json", env.gateway.proxy_addr());
    let r = send(&env.client, "HEAD", &url, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // The body would be rewritten on GET, so the backend's length is not passed on.
    assert_eq!(r.header("content-length"), None, "{:?}", r.headers);
    assert_eq!(r.header("etag"), Some("W/\"v1\""));
}

#[tokio::test]
async fn a_corrupt_gzip_body_fails_the_transfer_instead_of_ending_normally() {
    let env = Env::start("rw-corrupt").await;
    let url = format!("http://{}/rw/gzip-corrupt", env.gateway.proxy_addr());
    let req = Request::get(url)
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = env.client.request(req).await.expect("response head");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-encoding").is_none());
    let body = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(body.is_err(), "the client must see the body fail");
}
