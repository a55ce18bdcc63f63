//! Forwarding: build the upstream request and send it over a pooled keep-alive connection
//! ([`pool`]).
//!
//! The request body is handed to the backend as the `Incoming` stream and the response body
//! comes back as a stream too: nothing is buffered in the proxy.

pub mod backend_tls;
pub mod balance;
mod pool;

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use tollgate_crds::product::UnderscoreHeaders;
use tollgate_crds::table::{BackendTlsEntry, TimeoutsMs};

use crate::forward::backend_tls::{BackendTls, BackendTlsError};
use crate::forward::balance::Endpoints;
use crate::message::headers::{
    any_underscored, apply_ops, remove_underscored, HeaderOps, X_FORWARDED_FOR, X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
};
use crate::message::hop_by_hop;
use crate::message::request_id::X_REQUEST_ID;
use crate::message::trace_context::TraceContext;
use crate::message::value_arena;
use crate::problem::Rejection;
use crate::validate::ForwardBody;

use self::pool::ClientError;
pub use self::pool::{ClientPool, HttpClient, IDLE_TIMEOUT, MAX_IDLE_PER_AUTHORITY};

/// The public-roots configuration, built once (Mozilla's roots do not change at run time).
fn public_tls() -> Option<&'static BackendTls> {
    static PUBLIC: OnceLock<Option<BackendTls>> = OnceLock::new();
    PUBLIC
        .get_or_init(|| match BackendTls::public_roots() {
            Ok(tls) => Some(tls),
            Err(e) => {
                tracing::error!(target: "forward", error = %e, "cannot build the public-roots TLS configuration");
                None
            }
        })
        .as_ref()
}

/// A backend address, parsed once at build time.
#[derive(Debug, Clone)]
pub enum Backend {
    /// HTTP/1.1 over TCP (`http`) or over TLS (`https`).
    Http {
        /// `http` or `https`.
        scheme: Scheme,
        /// `host:port`.
        authority: Authority,
        /// Path prefix without a trailing `/` (may be empty).
        base_path: String,
    },
    /// The ready pods of a Service (from the operator's EndpointSlices), balanced round robin.
    Pods {
        /// `http` or `https`.
        scheme: Scheme,
        /// The pods, with their passive ejection state.
        pods: Arc<Endpoints>,
    },
    /// A scheme or address this version cannot forward to (answered with 502).
    Unsupported,
    /// Nothing to send to: an HTTPRoute rule whose backendRefs are missing or do not resolve
    /// (answered with 500, as the Gateway API requires).
    Unresolved,
    /// An HTTPRoute rule's `RequestRedirect`: the gateway answers (`respond::redirect`), nothing
    /// is forwarded.
    Redirect(Arc<Redirect>),
    /// The product's `backendTLS` cannot be used (answered with 502, never sent in plaintext).
    TlsMisconfigured,
}

impl Backend {
    /// Parse `scheme://authority[/path]`; `http` and `https` are forwarded.
    pub fn from_url(url: &str) -> Backend {
        let Ok(uri) = url.parse::<Uri>() else {
            return Backend::Unsupported;
        };
        match (uri.scheme(), uri.authority()) {
            (Some(s), Some(a)) if *s == Scheme::HTTP || *s == Scheme::HTTPS => Backend::Http {
                scheme: s.clone(),
                authority: a.clone(),
                base_path: uri.path().trim_end_matches('/').to_string(),
            },
            _ => Backend::Unsupported,
        }
    }
}

/// Where a `RequestRedirect` points; each part left out is the request's own.
#[derive(Debug)]
pub struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<Scheme>,
    /// The host name.
    pub hostname: Option<String>,
    /// The port.
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308.
    pub status: http::StatusCode,
}

/// A product's `backendTLS`, as the policy that set it.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTls<'a> {
    /// `namespace/name` of the policy (named in errors and warnings).
    pub policy: &'a str,
    /// The compiled settings.
    pub entry: &'a BackendTlsEntry,
}

/// A product's backend with its client and timeouts.
#[derive(Debug)]
pub struct Upstream {
    /// Where to send.
    pub backend: Backend,
    product: String,
    client: Option<Arc<HttpClient>>,
    request_timeout: Duration,
    tls_error: Option<BackendTlsError>,
    client_cert_not_after: Option<i64>,
}

impl Upstream {
    /// Tie `backend` of product `product` to the pooled client for its connect timeout and TLS
    /// identity: `tls` when the product has a `backendTLS`, else the public web roots (used
    /// only for `https://` backends).
    ///
    /// A `backendTLS` that cannot be used turns the backend into
    /// [`Backend::TlsMisconfigured`] (see [`Upstream::tls_error`]).
    pub fn new(
        product: &str,
        backend: Backend,
        clients: &ClientPool,
        timeouts: TimeoutsMs,
        tls: Option<UpstreamTls<'_>>,
    ) -> Upstream {
        let mut upstream = Upstream {
            backend,
            product: product.to_string(),
            client: None,
            request_timeout: Duration::from_millis(timeouts.request_ms.max(1)),
            tls_error: None,
            client_cert_not_after: None,
        };
        let built = match tls {
            None => public_tls().cloned().map(|t| (t, false)),
            Some(t) => {
                // Never downgrade: TLS was asked for, so an http:// backend is not reached at all.
                let plaintext = matches!(
                    &upstream.backend,
                    Backend::Http { scheme, .. } | Backend::Pods { scheme, .. } if *scheme != Scheme::HTTPS
                );
                let built = if plaintext {
                    Err(BackendTlsError::PlaintextBackend {
                        policy: t.policy.to_string(),
                    })
                } else {
                    BackendTls::from_entry(t.policy, t.entry)
                };
                match built {
                    Ok(built) => Some((built, true)),
                    Err(e) => {
                        upstream.tls_error = Some(e);
                        None
                    }
                }
            }
        };
        match built {
            Some((tls, https_only)) => {
                upstream.client_cert_not_after = tls.client_cert_not_after;
                upstream.client = Some(clients.client(timeouts.connect_ms, &tls, https_only));
            }
            None => upstream.backend = Backend::TlsMisconfigured,
        }
        upstream
    }

    /// Tie `backend` to a pooled client that always uses `tls` (HTTPS only): the mutual TLS of
    /// sidecar-injected pods ([`BackendTls::workload`]).
    pub fn with_tls(
        product: &str,
        backend: Backend,
        clients: &ClientPool,
        timeouts: TimeoutsMs,
        tls: &BackendTls,
    ) -> Upstream {
        Upstream {
            backend,
            product: product.to_string(),
            client: Some(clients.client(timeouts.connect_ms, tls, true)),
            request_timeout: Duration::from_millis(timeouts.request_ms.max(1)),
            tls_error: None,
            client_cert_not_after: None,
        }
    }

    /// `notAfter` (Unix seconds) of the client certificate presented to the backend, if any.
    pub fn client_cert_not_after(&self) -> Option<i64> {
        self.client_cert_not_after
    }

    /// Why the product's `backendTLS` cannot be used, if it cannot (reported at load).
    pub fn tls_error(&self) -> Option<&BackendTlsError> {
        self.tls_error.as_ref()
    }

    /// Send `req`; map a client body that broke off to 400, a TLS failure to 502 (logged with
    /// its reason), a timeout to 504 and connection failures to 502.
    pub async fn send(&self, req: Request<ForwardBody>) -> Result<Response<Incoming>, Rejection> {
        let Some(client) = &self.client else {
            return Err(Rejection::BackendTlsMisconfigured);
        };
        // Which pod this goes to, so a refused connection takes it out of rotation for a while.
        let pod = match &self.backend {
            Backend::Pods { pods, .. } => req.uri().authority().cloned().map(|a| (pods, a)),
            _ => None,
        };
        match tokio::time::timeout(self.request_timeout, client.request(req)).await {
            Err(_elapsed) => Err(Rejection::BackendTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                // The client's body broke off on its way through: its fault, not the backend's
                // (hyper closed the backend connection; the body stream counted and logged it).
                if e.is_client_body_fault() {
                    return Err(Rejection::BodyUnreadable);
                }
                if let Some(tls) = e.rustls_error() {
                    // The reason (unknown issuer, name mismatch, alert from the backend) is for
                    // the operator; the client only learns that TLS to the backend failed.
                    tracing::warn!(
                        target: "forward",
                        product = %self.product,
                        error = %tls,
                        "TLS with the backend failed; the request was not forwarded"
                    );
                    return Err(Rejection::BackendTls);
                }
                if e.is_connect() {
                    if let Some((pods, authority)) = pod {
                        pods.eject_authority(&authority, Instant::now());
                    }
                }
                Err(match e {
                    ClientError::ConnectTimeout => Rejection::BackendTimeout,
                    // The system's own connect timeout.
                    ClientError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                        Rejection::BackendTimeout
                    }
                    ClientError::Connect(_) | ClientError::Unsupported => {
                        Rejection::BackendUnreachable
                    }
                    ClientError::Http(_) => Rejection::BackendProtocol,
                })
            }
        }
    }
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
    /// Whether `Authorization` is removed: credentials are the gateway's to check, not the
    /// backend's to see, unless a policy has `forwardAuthorization`.
    pub strip_authorization: bool,
    /// Whether the client's `Host` is forwarded as is (else the backend's authority is sent).
    pub preserve_host: bool,
    /// A `Host` sent instead of either (an HTTPRoute rule's `URLRewrite` hostname).
    pub host_rewrite: Option<&'a HeaderValue>,
    /// Whether the client connection is TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
    /// Request header policy.
    pub ops: &'a HeaderOps,
    /// The request id.
    pub request_id: &'a HeaderValue,
    /// The request's trace: the backend gets the gateway's span as its `traceparent`.
    pub trace: &'a TraceContext,
}

/// The backend URI: backend base path + `path` (rewrite applied) + `query` (key removed).
pub fn target_uri(backend: &Backend, path: &str, query: Option<&str>) -> Result<Uri, Rejection> {
    target_uri_from(backend, path, query, None)
}

/// [`target_uri`], reusing the client's `original` path and query when the backend's are the
/// same text (no base path, no rewrite, no key in the query: the usual case), so the request
/// target is neither copied nor parsed again (a cheap clone of the bytes hyper read).
pub fn target_uri_from(
    backend: &Backend,
    path: &str,
    query: Option<&str>,
    original: Option<&PathAndQuery>,
) -> Result<Uri, Rejection> {
    let (scheme, authority, base_path) = match backend {
        Backend::Http {
            scheme,
            authority,
            base_path,
        } => (scheme, authority, base_path.as_str()),
        Backend::Pods { scheme, pods } => (scheme, pods.pick(Instant::now()).1, ""),
        Backend::Unsupported => return Err(Rejection::BackendUnsupported),
        // A redirect is answered before forwarding (pipeline, phase 3c); never sent anywhere.
        Backend::Unresolved | Backend::Redirect(_) => return Err(Rejection::NoBackend),
        Backend::TlsMisconfigured => return Err(Rejection::BackendTlsMisconfigured),
    };
    let pq = match original {
        Some(pq) if base_path.is_empty() && pq.path() == path && pq.query() == query => pq.clone(),
        _ => {
            let mut target = String::with_capacity(
                base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
            );
            target.push_str(base_path);
            target.push_str(path);
            if let Some(q) = query {
                target.push('?');
                target.push_str(q);
            }
            PathAndQuery::try_from(target).map_err(|_| Rejection::BadPath)?
        }
    };
    Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|_| Rejection::BadPath)
}

/// Refuse a request with a header name containing `_` when the product's
/// `headersWithUnderscores` is `Reject`. The product's own key header is exempt: the gateway
/// reads it and never forwards it.
pub fn check_header_names(
    mode: UnderscoreHeaders,
    headers: &HeaderMap,
    key_header: Option<&HeaderName>,
) -> Result<(), Rejection> {
    if mode == UnderscoreHeaders::Reject && any_underscored(headers, key_header) {
        return Err(Rejection::InvalidHeaderName);
    }
    Ok(())
}

/// With `headersWithUnderscores: Drop` (the default), remove header fields with `_` in their
/// name before the backend sees them; returns how many field lines went. Runs before the
/// policies' header changes, so a header a policy sets is kept whatever its name.
pub fn drop_header_names(mode: UnderscoreHeaders, headers: &mut HeaderMap) -> usize {
    match mode {
        UnderscoreHeaders::Drop => remove_underscored(headers),
        UnderscoreHeaders::Allow | UnderscoreHeaders::Reject => 0,
    }
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
    // Removed with the hop-by-hop fields, in one pass over the names: the key, `Authorization`
    // unless forwarded, and `Host` unless preserved (the client sets it from the backend URI, as
    // nginx's default `proxy_set_header Host`).
    let (host, authorization) = (header::HOST, header::AUTHORIZATION);
    let mut also = [&host; 3];
    let mut n = usize::from(!ctx.preserve_host);
    if let Some(name) = ctx.key_header {
        also[n] = name;
        n += 1;
    }
    if ctx.strip_authorization {
        also[n] = &authorization;
        n += 1;
    }
    hop_by_hop::strip_with(headers, &also[..n]);

    if let Some(v) = forwarded_for(headers.get(&X_FORWARDED_FOR), ctx.peer) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let proto = if ctx.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match &ctx.host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST, h.clone());
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    if let Some(h) = ctx.host_rewrite {
        headers.insert(header::HOST, h.clone());
    }
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    ctx.trace.apply(headers);
    apply_ops(headers, ctx.ops);
}

/// The `X-Forwarded-For` value with `peer` appended to `prior` (when that is a non-blank
/// string), else just `peer`; `None` if it is no valid header value. The address is formatted
/// on the stack; the value is cut from the per-thread block of [`value_arena`] when short,
/// else built with one allocation (the header value's own buffer).
fn forwarded_for(prior: Option<&HeaderValue>, peer: IpAddr) -> Option<HeaderValue> {
    // The longest textual address is an IPv4-mapped IPv6 one: 45 characters.
    let mut ip = [0u8; 48];
    let len = {
        let mut w = &mut ip[..];
        write!(w, "{peer}").ok()?;
        48 - w.len()
    };
    let ip = &ip[..len];
    match prior.and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => {
            let total = prior.len() + 2 + ip.len();
            if total <= value_arena::MAX_CARVED {
                let mut value = [0u8; value_arena::MAX_CARVED];
                value[..prior.len()].copy_from_slice(prior.as_bytes());
                value[prior.len()..prior.len() + 2].copy_from_slice(b", ");
                value[prior.len() + 2..total].copy_from_slice(ip);
                return value_arena::value(&value[..total]);
            }
            // Exactly the length: `Bytes::from` then takes the buffer without another allocation.
            let mut value = Vec::with_capacity(total);
            value.extend_from_slice(prior.as_bytes());
            value.extend_from_slice(b", ");
            value.extend_from_slice(ip);
            HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
        }
        _ => value_arena::value(ip),
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
            other => panic!("http is supported: {other:?}"),
        }
        match Backend::from_url("https://x.example/v1") {
            Backend::Http {
                scheme,
                authority,
                base_path,
            } => {
                assert_eq!(scheme, Scheme::HTTPS);
                assert_eq!(authority.as_str(), "x.example");
                assert_eq!(base_path, "/v1");
            }
            other => panic!("https is supported: {other:?}"),
        }
        assert!(matches!(
            Backend::from_url("ftp://x.example"),
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
    fn target_reuses_the_original_only_when_it_is_the_same_text() {
        let plain = Backend::from_url("http://127.0.0.1:9000");
        let based = Backend::from_url("http://127.0.0.1:9000/api");
        let pq = |s: &'static str| PathAndQuery::from_static(s);
        let cases: [(&Backend, &str, Option<&str>, PathAndQuery, &str); 6] = [
            (
                &plain,
                "/a",
                Some("b=1"),
                pq("/a?b=1"),
                "http://127.0.0.1:9000/a?b=1",
            ),
            (&plain, "/a", None, pq("/a"), "http://127.0.0.1:9000/a"),
            // The key left the query; an empty query is not forwarded.
            (
                &plain,
                "/a",
                Some("b=1"),
                pq("/a?b=1&key=s"),
                "http://127.0.0.1:9000/a?b=1",
            ),
            (&plain, "/a", None, pq("/a?"), "http://127.0.0.1:9000/a"),
            // A rewritten path, a base path.
            (
                &plain,
                "/v2/a",
                None,
                pq("/a"),
                "http://127.0.0.1:9000/v2/a",
            ),
            (&based, "/a", None, pq("/a"), "http://127.0.0.1:9000/api/a"),
        ];
        for (backend, path, query, original, want) in cases {
            let uri = target_uri_from(backend, path, query, Some(&original)).expect("uri");
            assert_eq!(uri.to_string(), want);
            assert_eq!(
                uri,
                target_uri(backend, path, query).expect("uri"),
                "{want}"
            );
        }
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
        h.insert("x-tag", HeaderValue::from_static("client"));
        let ops = HeaderOps {
            remove: vec![HeaderName::from_static("x-drop")],
            set: vec![(
                HeaderName::from_static("x-gateway"),
                HeaderValue::from_static("tollgate"),
            )],
            add: vec![(
                HeaderName::from_static("x-tag"),
                HeaderValue::from_static("gateway"),
            )],
        };
        let host = Some(HeaderValue::from_static("api.example"));
        let key = HeaderName::from_static("x-subscription-key");
        let id = HeaderValue::from_static("rid");
        let trace = TraceContext::from_headers(&HeaderMap::new());
        let ctx = ForwardContext {
            peer: "127.0.0.1".parse().expect("ip"),
            host,
            key_header: Some(&key),
            strip_authorization: true,
            preserve_host: false,
            host_rewrite: None,
            tls: false,
            ops: &ops,
            request_id: &id,
            trace: &trace,
        };
        rewrite_headers(&mut h, &ctx);
        assert!(!h.contains_key("x-subscription-key"));
        assert!(!h.contains_key("x-hop"));
        assert!(!h.contains_key("x-drop"));
        let tags: Vec<_> = h.get_all("x-tag").iter().collect();
        assert_eq!(
            tags,
            ["client", "gateway"],
            "add appends beside the client's value"
        );
        assert!(!h.contains_key(header::HOST));
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.7, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_HOST], "api.example");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_REQUEST_ID], "rid");
        assert_eq!(h["x-gateway"], "tollgate");

        // A product made from HTTPRoute rules keeps the client's Host (the key still goes).
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.example"));
        h.insert("x-subscription-key", HeaderValue::from_static("k"));
        let ctx = ForwardContext {
            preserve_host: true,
            host_rewrite: None,
            host: None,
            ..ctx
        };
        rewrite_headers(&mut h, &ctx);
        assert_eq!(h[header::HOST], "api.example");
        assert!(!h.contains_key("x-subscription-key"));
    }

    #[test]
    fn forwarded_for_appends_the_peer() {
        let v4: IpAddr = "192.0.2.1".parse().expect("ip");
        let v6: IpAddr = "::ffff:255.255.255.255".parse().expect("ip");
        let long: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
            .parse()
            .expect("ip");
        let hv = HeaderValue::from_static;
        assert_eq!(forwarded_for(None, v4).expect("v"), "192.0.2.1");
        assert_eq!(
            forwarded_for(None, v6).expect("v"),
            "::ffff:255.255.255.255"
        );
        assert_eq!(
            forwarded_for(None, long).expect("v"),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
        );
        assert_eq!(
            forwarded_for(Some(&hv("203.0.113.7, 10.0.0.1")), v4).expect("v"),
            "203.0.113.7, 10.0.0.1, 192.0.2.1"
        );
        // Blank or non-text prior values are replaced, not appended to.
        assert_eq!(forwarded_for(Some(&hv("  ")), v4).expect("v"), "192.0.2.1");
        let binary = HeaderValue::from_bytes(b"\xff").expect("obs-text");
        assert_eq!(forwarded_for(Some(&binary), v4).expect("v"), "192.0.2.1");
    }

    #[test]
    fn underscore_header_names_per_mode() {
        let request = || {
            let mut h = HeaderMap::new();
            h.insert("x_user", HeaderValue::from_static("admin"));
            h.insert("content_length", HeaderValue::from_static("5"));
            h.insert("x-user", HeaderValue::from_static("alice"));
            h
        };
        let key = HeaderName::from_static("x_key");
        let mut only_key = HeaderMap::new();
        only_key.insert(key.clone(), HeaderValue::from_static("k"));

        let mut h = request();
        assert_eq!(
            check_header_names(UnderscoreHeaders::Drop, &h, None),
            Ok(())
        );
        assert_eq!(drop_header_names(UnderscoreHeaders::Drop, &mut h), 2);
        assert_eq!(h.len(), 1);

        let mut h = request();
        assert_eq!(
            check_header_names(UnderscoreHeaders::Allow, &h, None),
            Ok(())
        );
        assert_eq!(drop_header_names(UnderscoreHeaders::Allow, &mut h), 0);
        assert_eq!(h.len(), 3);

        assert_eq!(
            check_header_names(UnderscoreHeaders::Reject, &request(), None),
            Err(Rejection::InvalidHeaderName)
        );
        assert_eq!(
            check_header_names(UnderscoreHeaders::Reject, &only_key, Some(&key)),
            Ok(()),
            "the product's own key header is the gateway's to read"
        );

        // A header a policy sets survives the drop, whatever its name.
        let mut h = request();
        drop_header_names(UnderscoreHeaders::Drop, &mut h);
        let ops = HeaderOps {
            remove: vec![],
            set: vec![(
                HeaderName::from_static("x_gateway"),
                HeaderValue::from_static("tollgate"),
            )],
            add: Vec::new(),
        };
        let id = HeaderValue::from_static("rid");
        let trace = TraceContext::from_headers(&HeaderMap::new());
        let ctx = ForwardContext {
            peer: "127.0.0.1".parse().expect("ip"),
            host: None,
            key_header: None,
            strip_authorization: true,
            preserve_host: false,
            host_rewrite: None,
            tls: false,
            ops: &ops,
            request_id: &id,
            trace: &trace,
        };
        rewrite_headers(&mut h, &ctx);
        assert_eq!(h["x_gateway"], "tollgate");
        assert!(!h.contains_key("x_user"));
    }

    fn timeouts() -> TimeoutsMs {
        TimeoutsMs {
            connect_ms: 1000,
            request_ms: 1000,
        }
    }

    pub(super) fn tls_entry(server_name: &str) -> BackendTlsEntry {
        BackendTlsEntry {
            server_name: Some(server_name.into()),
            insecure_skip_verify: true,
            ..BackendTlsEntry::default()
        }
    }

    #[test]
    fn pools_are_shared_per_identity_and_dropped_with_their_last_user() {
        let pool = ClientPool::default();
        let https = || Backend::from_url("https://127.0.0.1:9443");
        let a = tls_entry("a.internal");
        let b = tls_entry("b.internal");
        let tls = |entry| {
            Some(UpstreamTls {
                policy: "t/p",
                entry,
            })
        };
        let a1 = Upstream::new("t/x", https(), &pool, timeouts(), tls(&a));
        let a2 = Upstream::new("t/y", https(), &pool, timeouts(), tls(&a));
        let b1 = Upstream::new("t/z", https(), &pool, timeouts(), tls(&b));
        let plain = Upstream::new(
            "t/w",
            Backend::from_url("http://127.0.0.1:1"),
            &pool,
            timeouts(),
            None,
        );
        let (Some(ca1), Some(ca2), Some(cb1), Some(cp)) =
            (&a1.client, &a2.client, &b1.client, &plain.client)
        else {
            panic!("clients");
        };
        assert!(Arc::ptr_eq(ca1, ca2), "same identity, same pool");
        assert!(!Arc::ptr_eq(ca1, cb1), "rotated identity, new pool");
        assert!(!Arc::ptr_eq(ca1, cp));
        assert_eq!(pool.live_clients(), 3);
        drop((a1, a2));
        assert_eq!(
            pool.live_clients(),
            2,
            "the old identity's pool goes with its last user"
        );
        drop((b1, plain));
        assert_eq!(pool.live_clients(), 0);
    }

    #[test]
    fn unusable_backend_tls_never_gets_a_client() {
        let pool = ClientPool::default();
        let entry = tls_entry("a.internal");
        let tls = Some(UpstreamTls {
            policy: "t/p",
            entry: &entry,
        });
        let up = Upstream::new(
            "t/x",
            Backend::from_url("http://127.0.0.1:9"),
            &pool,
            timeouts(),
            tls,
        );
        assert!(matches!(up.backend, Backend::TlsMisconfigured));
        assert!(up.client.is_none());
        assert!(matches!(
            up.tls_error(),
            Some(BackendTlsError::PlaintextBackend { .. })
        ));
        assert_eq!(
            target_uri(&up.backend, "/", None),
            Err(Rejection::BackendTlsMisconfigured)
        );

        let mut bad = tls_entry("a.internal");
        bad.ca_pem = Some("garbage".into());
        bad.insecure_skip_verify = false;
        let tls = Some(UpstreamTls {
            policy: "t/p",
            entry: &bad,
        });
        let up = Upstream::new(
            "t/x",
            Backend::from_url("https://127.0.0.1:9"),
            &pool,
            timeouts(),
            tls,
        );
        assert!(matches!(up.backend, Backend::TlsMisconfigured));
        let err = up.tls_error().map(ToString::to_string).unwrap_or_default();
        assert!(err.contains("t/p") && err.contains("caSecret"), "{err}");
    }
}
