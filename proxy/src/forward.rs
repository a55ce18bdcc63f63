//! Forwarding: build the upstream request and send it over a pooled keep-alive connection.
//!
//! The request body is handed to the client as the `Incoming` stream and the response body comes
//! back as a stream too: nothing is buffered in the proxy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tollgate_crds::table::TimeoutsMs;

use crate::hop_by_hop;
use crate::problem::Rejection;
use crate::request_id::X_REQUEST_ID;
use crate::runtime::HeaderOps;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What is sent to a backend: the client's body as it streams in, or a body the gateway already
/// holds (request validation reads a bounded body before the backend may see a byte).
pub type ForwardBody = Either<Incoming, Full<Bytes>>;

/// The pooled HTTP/1.1 client type.
pub type HttpClient = Client<HttpConnector, ForwardBody>;

/// One keep-alive pool per connect timeout, shared by every table so reloads keep connections.
#[derive(Default)]
pub struct ClientPool {
    clients: Mutex<HashMap<u64, HttpClient>>,
}

impl std::fmt::Debug for ClientPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientPool")
    }
}

impl ClientPool {
    /// The client whose connector uses `connect_ms` (created on first use; called at build time).
    pub fn client(&self, connect_ms: u64) -> HttpClient {
        // A poisoned lock only means another build panicked; the map itself is still valid.
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(connect_ms)
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(Duration::from_millis(connect_ms.max(1))));
                connector.set_keepalive(Some(Duration::from_secs(60)));
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(1024)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(connector)
            })
            .clone()
    }
}

/// A backend address, parsed once at build time.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Plain HTTP.
    Http {
        /// `http`.
        scheme: Scheme,
        /// `host:port`.
        authority: Authority,
        /// Path prefix without a trailing `/` (may be empty).
        base_path: String,
    },
    /// A scheme or address this version cannot forward to (answered with 502).
    Unsupported,
}

impl Backend {
    /// Parse `scheme://authority[/path]`; only `http` is forwarded by this version.
    pub fn from_url(url: &str) -> Backend {
        let Ok(uri) = url.parse::<Uri>() else {
            return Backend::Unsupported;
        };
        match (uri.scheme(), uri.authority()) {
            (Some(s), Some(a)) if *s == Scheme::HTTP => Backend::Http {
                scheme: s.clone(),
                authority: a.clone(),
                base_path: uri.path().trim_end_matches('/').to_string(),
            },
            _ => Backend::Unsupported,
        }
    }
}

/// A product's backend with its client and timeouts.
#[derive(Debug)]
pub struct Upstream {
    /// Where to send.
    pub backend: Backend,
    client: HttpClient,
    request_timeout: Duration,
}

impl Upstream {
    /// Tie `backend` to the pooled client for its connect timeout.
    pub fn new(backend: Backend, clients: &ClientPool, timeouts: TimeoutsMs) -> Upstream {
        Upstream {
            backend,
            client: clients.client(timeouts.connect_ms),
            request_timeout: Duration::from_millis(timeouts.request_ms.max(1)),
        }
    }

    /// Send `req`; map a timeout to 504 and connection failures to 502.
    pub async fn send(&self, req: Request<ForwardBody>) -> Result<Response<Incoming>, Rejection> {
        match tokio::time::timeout(self.request_timeout, self.client.request(req)).await {
            Err(_elapsed) => Err(Rejection::BackendTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() && caused_by_timeout(&e) => Err(Rejection::BackendTimeout),
            Ok(Err(e)) if e.is_connect() => Err(Rejection::BackendUnreachable),
            Ok(Err(_)) => Err(Rejection::BackendProtocol),
        }
    }
}

fn caused_by_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// What the forward phase needs to know about the request besides its headers.
#[derive(Debug)]
pub struct ForwardContext<'a> {
    /// The client's address (appended to `X-Forwarded-For`).
    pub peer: IpAddr,
    /// The original host (sent as `X-Forwarded-Host`).
    pub host: Option<HeaderValue>,
    /// The product's key header, removed before forwarding.
    pub key_header: Option<&'a HeaderName>,
    /// Request header policy.
    pub ops: &'a HeaderOps,
    /// The request id.
    pub request_id: &'a HeaderValue,
}

/// The backend URI: backend base path + `path` (rewrite applied) + `query` (key removed).
pub fn target_uri(backend: &Backend, path: &str, query: Option<&str>) -> Result<Uri, Rejection> {
    let Backend::Http {
        scheme,
        authority,
        base_path,
    } = backend
    else {
        return Err(Rejection::BackendUnsupported);
    };
    let mut target =
        String::with_capacity(base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    target.push_str(base_path);
    target.push_str(path);
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    let pq = PathAndQuery::try_from(target).map_err(|_| Rejection::BadPath)?;
    Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|_| Rejection::BadPath)
}

/// Turn the client's request parts into the backend's request, with the same body stream.
pub fn upstream_request(
    mut parts: http::request::Parts,
    body: ForwardBody,
    uri: Uri,
    ctx: &ForwardContext<'_>,
) -> Request<ForwardBody> {
    parts.uri = uri;
    // The backend pool speaks HTTP/1.1 whatever the client used.
    parts.version = Version::HTTP_11;
    rewrite_headers(&mut parts.headers, ctx);
    Request::from_parts(parts, body)
}

/// Header changes on the way in: hop-by-hop, credentials, forwarding headers, id, policy.
pub fn rewrite_headers(headers: &mut HeaderMap, ctx: &ForwardContext<'_>) {
    hop_by_hop::strip(headers);
    if let Some(name) = ctx.key_header {
        headers.remove(name);
    }
    // The client sets Host from the backend URI, as nginx's default `proxy_set_header Host`.
    headers.remove(header::HOST);

    let peer = ctx.peer.to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {peer}"),
        _ => peer,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    match &ctx.host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST, h.clone());
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    apply_ops(headers, ctx.ops);
}

/// Apply a policy's removes, then its sets.
pub fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        headers.remove(name);
    }
    for (name, value) in &ops.set {
        headers.insert(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls() {
        match Backend::from_url("http://127.0.0.1:9000/api/") {
            Backend::Http {
                authority,
                base_path,
                ..
            } => {
                assert_eq!(authority.as_str(), "127.0.0.1:9000");
                assert_eq!(base_path, "/api");
            }
            Backend::Unsupported => panic!("http is supported"),
        }
        assert!(matches!(
            Backend::from_url("https://x.example"),
            Backend::Unsupported
        ));
        assert!(matches!(
            Backend::from_url("not a url"),
            Backend::Unsupported
        ));
    }

    #[test]
    fn target_joins_base_path_and_query() {
        let b = Backend::from_url("http://127.0.0.1:9000/api");
        let uri = target_uri(&b, "/current", Some("city=Oslo")).expect("uri");
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:9000/api/current?city=Oslo"
        );
        let b = Backend::from_url("http://127.0.0.1:9000");
        assert_eq!(
            target_uri(&b, "/", None).expect("uri").to_string(),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(
            target_uri(&Backend::Unsupported, "/", None),
            Err(Rejection::BackendUnsupported)
        );
    }

    #[test]
    fn headers_on_the_way_in() {
        let mut h = HeaderMap::new();
        h.insert("x-subscription-key", HeaderValue::from_static("secret"));
        h.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.insert(header::HOST, HeaderValue::from_static("api.example"));
        h.insert("x-drop", HeaderValue::from_static("1"));
        let ops = HeaderOps {
            remove: vec![HeaderName::from_static("x-drop")],
            set: vec![(
                HeaderName::from_static("x-gateway"),
                HeaderValue::from_static("tollgate"),
            )],
        };
        let host = Some(HeaderValue::from_static("api.example"));
        let key = HeaderName::from_static("x-subscription-key");
        let id = HeaderValue::from_static("rid");
        let ctx = ForwardContext {
            peer: "127.0.0.1".parse().expect("ip"),
            host,
            key_header: Some(&key),
            ops: &ops,
            request_id: &id,
        };
        rewrite_headers(&mut h, &ctx);
        assert!(!h.contains_key("x-subscription-key"));
        assert!(!h.contains_key("x-hop"));
        assert!(!h.contains_key("x-drop"));
        assert!(!h.contains_key(header::HOST));
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.7, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_HOST], "api.example");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_REQUEST_ID], "rid");
        assert_eq!(h["x-gateway"], "tollgate");
    }
}
