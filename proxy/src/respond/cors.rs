//! CORS: the gateway answers preflights from the product's `cors` policy and adds the CORS
//! response headers to actual requests (backend answers and the gateway's own problem answers).
//!
//! # Rules
//! - A preflight is an `OPTIONS` request with both `Origin` and `Access-Control-Request-Method`.
//!   It is routed by the method it asks about; when that route's product has a `cors` policy the
//!   gateway answers it with `204 No Content` (never forwarded, no key needed: browsers send
//!   preflights without credentials). Otherwise it goes through the normal pipeline.
//! - An allowed preflight gets `Access-Control-Allow-Origin`, `-Allow-Methods` (the policy's, or
//!   the route's methods when the policy lists none, or the requested method when the route takes
//!   any), `-Allow-Headers` (the requested headers, all of which are allowed), and
//!   `-Expose-Headers`, `-Max-Age` and `-Allow-Credentials` when configured.
//! - A refused preflight (origin, method or a requested header not allowed) is still `204`, but
//!   carries no `Access-Control-Allow-*` header: the browser's CORS check then fails and the
//!   script sees a network error, which is what the Fetch standard prescribes for a refusal.
//!   Nothing about the policy is disclosed to an origin it does not allow.
//! - Every response of a product with a `cors` policy carries `Vary: Origin` (preflights also
//!   `Vary: Access-Control-Request-Method, Access-Control-Request-Headers`), so shared caches
//!   never serve one origin's answer to another.
//! - Actual requests from an allowed origin get `Access-Control-Allow-Origin`,
//!   `-Expose-Headers` and `-Allow-Credentials`; a disallowed origin gets none (the browser hides
//!   the answer); the request itself is never altered. The backend's own
//!   `Access-Control-Allow-*`/`-Expose-Headers`/`-Max-Age` headers are dropped on such products:
//!   the policy is the one source of CORS answers.
//! - An allowed origin is listed exactly, or matches a `scheme://*.host` pattern (one or more
//!   labels in front of `.host`, as the Gateway API's CORS filter defines `*`).
//! - `Access-Control-Allow-Origin` is `*` only for a wildcard policy without credentials. A
//!   wildcard with credentials from an ApiPolicy (which the compiler refuses) is served as a
//!   wildcard *without* credentials: `*` is never sent together with
//!   `Access-Control-Allow-Credentials`, and an arbitrary origin is never echoed with
//!   credentials. The one exception is an HTTPRoute `CORS` filter (`wildcardsWithCredentials`
//!   in the table, and a compiler warning): the Gateway API requires its wildcard origin and
//!   header list with credentials to echo the request's origin and headers.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{Method, Response, StatusCode};
use tollgate_crds::table::CorsEntry;

use crate::message::methods::allow_value;

const TRUE: HeaderValue = HeaderValue::from_static("true");
const ANY: HeaderValue = HeaderValue::from_static("*");
const VARY_PREFLIGHT: &str = "Access-Control-Request-Method, Access-Control-Request-Headers";

/// Which origins a policy allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// `*`: any origin.
    Any,
    /// Lowercased `scheme://host[:port]` origins and patterns.
    List(Vec<OriginPattern>),
}

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// This origin exactly.
    Exact(String),
    /// `scheme://*.rest`: `scheme://` followed by one or more labels and `.rest` (the rest of
    /// the host and the port, if any); `*` stands for any number of labels, as the Gateway
    /// API's CORS filter defines it.
    Subdomains {
        /// `scheme://`.
        scheme: String,
        /// `.rest`, with its leading dot.
        suffix: String,
    },
}

impl OriginPattern {
    fn new(origin: &str) -> OriginPattern {
        match origin.split_once("://*.") {
            Some((scheme, rest)) => OriginPattern::Subdomains {
                scheme: format!("{scheme}://"),
                suffix: format!(".{rest}"),
            },
            None => OriginPattern::Exact(origin.to_string()),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginPattern::Subdomains { scheme, suffix } => {
                let (Some(head), Some(tail)) = (
                    origin.get(..scheme.len()),
                    origin
                        .len()
                        .checked_sub(suffix.len())
                        .and_then(|at| origin.get(at..)),
                ) else {
                    return false;
                };
                let labels = origin.get(scheme.len()..origin.len() - suffix.len());
                head.eq_ignore_ascii_case(scheme)
                    && tail.eq_ignore_ascii_case(suffix)
                    && labels.is_some_and(|l| {
                        !l.is_empty()
                            && !l.starts_with('.')
                            && l.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
                    })
            }
        }
    }
}

/// A `cors` policy, resolved for the request path.
#[derive(Debug, Clone)]
pub struct CorsRt {
    origins: Origins,
    /// Methods bit set ([`crate::message::methods::method_bit`]); `None`: the route's methods.
    methods: Option<u8>,
    /// Allowed request headers, lowercased; `any_header` when the list is `*` (no credentials).
    headers: Vec<String>,
    any_header: bool,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

impl CorsRt {
    /// Resolve a compiled entry. Header names that are not valid tokens can never be requested,
    /// so they are simply dropped from the expose list.
    pub fn new(entry: &CorsEntry) -> CorsRt {
        let origins = if entry.allow_origins.iter().any(|o| o == "*") {
            Origins::Any
        } else {
            Origins::List(
                entry
                    .allow_origins
                    .iter()
                    .map(|o| OriginPattern::new(&o.to_ascii_lowercase()))
                    .collect(),
            )
        };
        // Never `*` with credentials: a wildcard policy drops credentials, unless it is the
        // Gateway API's, which echoes the origin instead (see module docs).
        let credentials = entry.allow_credentials
            && (origins != Origins::Any || entry.wildcards_with_credentials);
        let methods = (!entry.allow_methods.is_empty()).then(|| {
            entry
                .allow_methods
                .iter()
                .map(|m| http::Method::from_bytes(m.as_str().as_bytes()))
                .filter_map(Result::ok)
                .fold(0u8, |acc, m| acc | crate::message::methods::method_bit(&m))
        });
        let any_header = (!credentials || entry.wildcards_with_credentials)
            && entry.allow_headers.iter().any(|h| h == "*");
        let headers = entry
            .allow_headers
            .iter()
            .filter(|h| h.as_str() != "*")
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let expose = join(
            entry
                .expose_headers
                .iter()
                .filter(|h| HeaderName::from_bytes(h.as_bytes()).is_ok()),
        );
        CorsRt {
            origins,
            methods,
            headers,
            any_header,
            expose,
            credentials,
            max_age: entry.max_age_secs.map(HeaderValue::from),
        }
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, or `None` when it is not allowed.
    pub fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.origins {
            // Only a Gateway API wildcard keeps credentials; it must name the origin then.
            Origins::Any if self.credentials => Some(origin.clone()),
            Origins::Any => Some(ANY),
            Origins::List(list) => {
                let o = origin.to_str().ok()?;
                list.iter()
                    .any(|allowed| allowed.matches(o))
                    .then(|| origin.clone())
            }
        }
    }

    /// Whether a preflight asking for `method` may proceed, given the route's method bits.
    fn method_allowed(&self, method: &Method, route_methods: u8) -> bool {
        let bit = crate::message::methods::method_bit(method);
        match self.methods {
            Some(mask) => mask & bit != 0,
            None => route_methods == 0 || route_methods & bit != 0,
        }
    }

    fn header_allowed(&self, name: &str) -> bool {
        self.any_header || self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// A CORS preflight request: what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    /// `Origin`.
    pub origin: HeaderValue,
    /// `Access-Control-Request-Method`.
    pub method: Method,
    /// `Access-Control-Request-Headers`, lowercased, empty entries dropped.
    pub headers: Vec<String>,
}

impl Preflight {
    /// The preflight this request is, if any: `OPTIONS` with `Origin` and a valid
    /// `Access-Control-Request-Method`.
    pub fn parse(method: &Method, headers: &HeaderMap) -> Option<Preflight> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = headers.get(ORIGIN)?.clone();
        let requested = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
        let method = Method::from_bytes(requested.as_bytes()).ok()?;
        let headers = headers
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Some(Preflight {
            origin,
            method,
            headers,
        })
    }
}

/// The gateway's answer to `pre` on a route with `route_methods` (0: any method).
pub fn preflight_response<B: Default>(
    cors: &CorsRt,
    pre: &Preflight,
    route_methods: u8,
) -> Response<B> {
    let mut resp = Response::new(B::default());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    add_vary(h, "Origin");
    add_vary(h, VARY_PREFLIGHT);
    let Some(allow_origin) = cors.allow_origin(&pre.origin) else {
        return resp;
    };
    if !cors.method_allowed(&pre.method, route_methods)
        || !pre.headers.iter().all(|n| cors.header_allowed(n))
    {
        return resp;
    }
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    let methods = match cors.methods {
        Some(mask) => allow_value(mask),
        None if route_methods != 0 => allow_value(route_methods),
        // A route taking any method: name the one asked for.
        None => HeaderValue::from_str(pre.method.as_str()).unwrap_or(ANY),
    };
    h.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
    // Every requested header is allowed; echoing them answers exactly what was asked.
    if let Some(v) = join(pre.headers.iter()) {
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(expose) = &cors.expose {
        h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
    }
    if let Some(age) = &cors.max_age {
        h.insert(ACCESS_CONTROL_MAX_AGE, age.clone());
    }
    if cors.credentials {
        h.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
    }
    resp
}

/// Add the CORS headers of an actual (non-preflight) request's answer to `headers`.
pub fn apply_actual(cors: &CorsRt, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    for name in [
        ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ACCESS_CONTROL_EXPOSE_HEADERS,
        ACCESS_CONTROL_ALLOW_METHODS,
        ACCESS_CONTROL_ALLOW_HEADERS,
        ACCESS_CONTROL_MAX_AGE,
    ] {
        headers.remove(name);
    }
    add_vary(headers, "Origin");
    let Some(allow_origin) = origin.and_then(|o| cors.allow_origin(o)) else {
        return;
    };
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    if let Some(expose) = &cors.expose {
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
    }
    if cors.credentials {
        headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
    }
}

/// Append `tokens` to `Vary` unless `Vary` is `*` or already names each of them.
fn add_vary(headers: &mut HeaderMap, tokens: &str) {
    let present: Vec<String> = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    if present.iter().any(|t| t == "*") {
        return;
    }
    let missing: Vec<&str> = tokens
        .split(", ")
        .filter(|t| !present.iter().any(|p| p.eq_ignore_ascii_case(t)))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&missing.join(", ")) {
        if !missing.is_empty() {
            headers.append(VARY, v);
        }
    }
}

fn join<'a>(items: impl Iterator<Item = &'a String>) -> Option<HeaderValue> {
    let joined = items.map(String::as_str).collect::<Vec<_>>().join(", ");
    if joined.is_empty() {
        return None;
    }
    HeaderValue::from_str(&joined).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::*;
    use tollgate_crds::product::Method as CrdMethod;

    fn entry(origins: &[&str], credentials: bool) -> CorsEntry {
        CorsEntry {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec![],
            allow_headers: vec!["content-type".into(), "x-trace".into()],
            expose_headers: vec!["x-request-id".into(), "ratelimit-remaining".into()],
            allow_credentials: credentials,
            wildcards_with_credentials: false,
            max_age_secs: Some(600),
        }
    }

    fn preflight(origin: &str, method: &str, headers: &str) -> Preflight {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        h.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_str(method).unwrap(),
        );
        if !headers.is_empty() {
            h.insert(
                ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(headers).unwrap(),
            );
        }
        Preflight::parse(&Method::OPTIONS, &h).unwrap()
    }

    fn get<'a>(r: &'a Response<()>, name: &str) -> Option<&'a str> {
        r.headers().get(name).and_then(|v| v.to_str().ok())
    }

    const GET_POST: u8 = 1 | 1 << 2;

    #[test]
    fn only_options_with_origin_and_request_method_is_a_preflight() {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_static("https://a.example"));
        assert_eq!(Preflight::parse(&Method::OPTIONS, &h), None);
        h.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PUT"),
        );
        assert_eq!(Preflight::parse(&Method::GET, &h), None);
        let p = Preflight::parse(&Method::OPTIONS, &h).unwrap();
        assert_eq!(p.method, Method::PUT);
        assert!(p.headers.is_empty());
        h.remove(ORIGIN);
        assert_eq!(Preflight::parse(&Method::OPTIONS, &h), None);
    }

    #[test]
    fn allowed_preflight_echoes_origin_with_credentials() {
        let cors = CorsRt::new(&entry(&["https://app.example"], true));
        let r: Response<()> = preflight_response(
            &cors,
            &preflight("https://app.example", "POST", "Content-Type, X-Trace"),
            GET_POST,
        );
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            get(&r, "access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(get(&r, "access-control-allow-methods"), Some("GET, POST"));
        assert_eq!(
            get(&r, "access-control-allow-headers"),
            Some("content-type, x-trace")
        );
        assert_eq!(get(&r, "access-control-max-age"), Some("600"));
        assert_eq!(get(&r, "access-control-allow-credentials"), Some("true"));
        let vary: Vec<&str> = r
            .headers()
            .get_all(VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(
            vary,
            [
                "Origin",
                "Access-Control-Request-Method, Access-Control-Request-Headers"
            ]
        );
    }

    #[test]
    fn refused_preflights_carry_no_allow_headers() {
        let cors = CorsRt::new(&entry(&["https://app.example"], false));
        let cases = [
            preflight("https://evil.example", "GET", ""),
            preflight("https://app.example", "DELETE", ""),
            preflight("https://app.example", "GET", "x-trace, authorization"),
        ];
        for pre in cases {
            let r: Response<()> = preflight_response(&cors, &pre, GET_POST);
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
            assert!(
                !r.headers()
                    .keys()
                    .any(|k| k.as_str().starts_with("access-control-")),
                "{pre:?}: {:?}",
                r.headers()
            );
            assert!(r.headers().get(VARY).is_some());
        }
    }

    #[test]
    fn policy_methods_override_route_methods_and_any_route_names_the_request() {
        let mut e = entry(&["https://app.example"], false);
        e.allow_methods = vec![CrdMethod::Get, CrdMethod::Put];
        let cors = CorsRt::new(&e);
        let r: Response<()> = preflight_response(
            &cors,
            &preflight("https://app.example", "PUT", ""),
            GET_POST,
        );
        assert_eq!(get(&r, "access-control-allow-methods"), Some("GET, PUT"));
        let r: Response<()> = preflight_response(
            &cors,
            &preflight("https://app.example", "POST", ""),
            GET_POST,
        );
        assert_eq!(get(&r, "access-control-allow-origin"), None);

        let cors = CorsRt::new(&entry(&["https://app.example"], false));
        let r: Response<()> =
            preflight_response(&cors, &preflight("https://app.example", "PATCH", ""), 0);
        assert_eq!(get(&r, "access-control-allow-methods"), Some("PATCH"));
    }

    #[test]
    fn wildcard_never_goes_with_credentials() {
        // The compiler refuses this combination; the proxy still never emits it.
        let cors = CorsRt::new(&entry(&["*"], true));
        let r: Response<()> =
            preflight_response(&cors, &preflight("https://any.example", "GET", ""), 0);
        assert_eq!(get(&r, "access-control-allow-origin"), Some("*"));
        assert_eq!(get(&r, "access-control-allow-credentials"), None);
        let mut h = HeaderMap::new();
        apply_actual(
            &cors,
            Some(&HeaderValue::from_static("https://any.example")),
            &mut h,
        );
        assert_eq!(h.get(ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "*");
        assert!(h.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    }

    #[test]
    fn subdomain_patterns_match_one_or_more_labels_of_the_same_scheme_and_port() {
        let cors = CorsRt::new(&entry(
            &["https://*.bar.com", "http://*.local.test:8080"],
            false,
        ));
        let allowed = |o: &str| cors.allow_origin(&HeaderValue::from_str(o).unwrap());
        for ok in [
            "https://www.bar.com",
            "https://xpto.www.bar.com",
            "HTTPS://WWW.Bar.Com",
            "http://a.local.test:8080",
        ] {
            assert_eq!(allowed(ok).unwrap(), ok, "{ok}");
        }
        for no in [
            "https://bar.com",
            "https://.bar.com",
            "https://evilbar.com",
            "http://www.bar.com",
            "https://www.bar.com:8443",
            "https://www.bar.com.evil",
            "https://a/b.bar.com",
            "http://a.local.test",
            "http://a.local.test:80800",
        ] {
            assert_eq!(allowed(no), None, "{no}");
        }
    }

    #[test]
    fn gateway_api_wildcards_with_credentials_echo_the_origin_and_headers() {
        let mut e = entry(&["*"], true);
        e.allow_headers = vec!["*".into()];
        e.wildcards_with_credentials = true;
        let cors = CorsRt::new(&e);
        let r: Response<()> = preflight_response(
            &cors,
            &preflight("https://other.foo.com", "PUT", "x-header-1, x-header-2"),
            0,
        );
        assert_eq!(
            get(&r, "access-control-allow-origin"),
            Some("https://other.foo.com")
        );
        assert_eq!(get(&r, "access-control-allow-methods"), Some("PUT"));
        assert_eq!(
            get(&r, "access-control-allow-headers"),
            Some("x-header-1, x-header-2")
        );
        assert_eq!(get(&r, "access-control-allow-credentials"), Some("true"));
        assert_eq!(
            get(&r, "access-control-expose-headers"),
            Some("x-request-id, ratelimit-remaining")
        );
        let mut h = HeaderMap::new();
        apply_actual(
            &cors,
            Some(&HeaderValue::from_static("https://other.foo.com")),
            &mut h,
        );
        assert_eq!(
            h.get(ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
            "https://other.foo.com"
        );
        assert_eq!(h.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).unwrap(), "true");
    }

    #[test]
    fn actual_request_headers_for_allowed_and_other_origins() {
        let cors = CorsRt::new(&entry(&["https://app.example"], true));
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        // The backend's own CORS answer is replaced by the policy's.
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        apply_actual(
            &cors,
            Some(&HeaderValue::from_static("https://app.example")),
            &mut h,
        );
        assert_eq!(
            h.get(ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
            "https://app.example"
        );
        assert_eq!(h.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).unwrap(), "true");
        assert_eq!(
            h.get(ACCESS_CONTROL_EXPOSE_HEADERS).unwrap(),
            "x-request-id, ratelimit-remaining"
        );
        let vary: Vec<&str> = h
            .get_all(VARY)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);

        for origin in [Some(HeaderValue::from_static("https://evil.example")), None] {
            let mut h = HeaderMap::new();
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            apply_actual(&cors, origin.as_ref(), &mut h);
            assert!(h.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
            assert!(h.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
            assert_eq!(h.get(VARY).unwrap(), "Origin");
        }
    }

    #[test]
    fn vary_is_not_duplicated_and_star_is_kept() {
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("origin, accept"));
        add_vary(&mut h, "Origin");
        assert_eq!(h.get_all(VARY).iter().count(), 1);
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("*"));
        add_vary(&mut h, VARY_PREFLIGHT);
        assert_eq!(h.get_all(VARY).iter().count(), 1);
    }
}
