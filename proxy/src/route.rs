//! Route matching: a pure function of the runtime, host, path and method.
//!
//! Order: the most specific host tier that has a route for the path decides (exact hostname,
//! then `*.suffix` longest first, then products without hostnames); inside a tier, exact paths
//! before prefixes and longer before shorter. A path that matches but whose method does not gives
//! 405 with the union of the matching routes' methods.

use std::borrow::Cow;

use http::header::HeaderValue;
use http::HeaderMap;
use http::Method;
use tollgate_crds::product::PathMatch;

use crate::message::methods::{allow_value, method_bit};
use crate::problem::Rejection;
use crate::runtime::{HostIndex, RouteRef, RouteRt, Runtime};

/// What [`find`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// This route serves the request.
    Found(RouteRef),
    /// No route for this host and path.
    NotFound,
    /// Routes match the path, not the method.
    MethodNotAllowed {
        /// Value for the `Allow` header.
        allow: HeaderValue,
    },
}

impl RouteMatch {
    /// The route, or the rejection to send.
    pub fn into_result(self) -> Result<RouteRef, Rejection> {
        match self {
            RouteMatch::Found(r) => Ok(r),
            RouteMatch::NotFound => Err(Rejection::NoRoute),
            RouteMatch::MethodNotAllowed { allow } => Err(Rejection::MethodNotAllowed { allow }),
        }
    }
}

/// The host to route on: port and trailing dot removed, lowercased (borrowed when already so).
pub fn normalise_host(raw: &str) -> Cow<'_, str> {
    let host = if raw.starts_with('[') {
        // IPv6 literal: keep up to the closing bracket.
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Reject paths a backend could interpret differently from the gateway: not starting with `/`,
/// a raw `\`, or a segment that some backend reads as `.`/`..` or as containing a separator.
///
/// Servlet containers (Tomcat, Spring) drop `;`-parameters from a segment before resolving
/// dot-segments (`/..;/` is `/../`), and some backends or the proxies in front of them decode
/// the path once more than the gateway does (`%252e` → `%2e` → `.`). So a segment is refused
/// when, after up to two rounds of percent-decoding and without its `;`-parameters, it is `.`
/// or `..`, or when decoding reveals a `/` or `\`. Everything else is forwarded verbatim.
pub fn check_path(path: &str) -> Result<(), Rejection> {
    if !path.starts_with('/') || path.as_bytes().contains(&b'\\') {
        return Err(Rejection::BadPath);
    }
    // Byte-wise and without allocating: this runs on every request, and most segments hold
    // neither a `.` nor a `%`, which is all the per-segment checks look at first.
    let ambiguous = path
        .as_bytes()
        .split(|&b| b == b'/')
        .any(|segment| is_dot_segment(segment) || hides_separator(segment));
    if ambiguous {
        return Err(Rejection::BadPath);
    }
    Ok(())
}

/// Whether `segment` reads as `.` or `..` once percent-decoded up to twice and cut at its first
/// `;` (its parameters): `..`, `%2e%2E`, `..;`, `.;x=1`, `%2e%2e;`, `..%3b`, `%252e%252e`.
/// `...`, `..foo` or `.well-known` are not dot-segments.
fn is_dot_segment(segment: &[u8]) -> bool {
    if !segment.iter().any(|&b| b == b'.' || b == b'%') {
        return false;
    }
    let mut dots = 0;
    for b in Decode::new(Decode::new(segment.iter().copied())) {
        match b {
            b'.' if dots < 2 => dots += 1,
            b';' => break,
            _ => return false,
        }
    }
    dots > 0
}

/// Whether percent-decoding `segment` up to twice yields a `/` or `\` (`%2f`, `%5C`, `%252f`):
/// a backend that decodes before splitting would see other segments than the gateway routed on.
fn hides_separator(segment: &[u8]) -> bool {
    segment.contains(&b'%')
        && Decode::new(Decode::new(segment.iter().copied())).any(|b| b == b'/' || b == b'\\')
}

/// One round of percent-decoding over a byte stream: `%` and two hex digits become that byte,
/// anything else (a lone `%`, `%zz`) passes through unchanged. Streaming, so that two rounds
/// stacked need no buffer.
struct Decode<I: Iterator<Item = u8>> {
    inner: I,
    /// Bytes read ahead after a `%` that did not start an escape, oldest first.
    ahead: [u8; 2],
    queued: usize,
}

impl<I: Iterator<Item = u8>> Decode<I> {
    fn new(inner: I) -> Self {
        Decode {
            inner,
            ahead: [0; 2],
            queued: 0,
        }
    }

    fn pull(&mut self) -> Option<u8> {
        if self.queued > 0 {
            let b = self.ahead[0];
            self.ahead[0] = self.ahead[1];
            self.queued -= 1;
            Some(b)
        } else {
            self.inner.next()
        }
    }
}

impl<I: Iterator<Item = u8>> Iterator for Decode<I> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let b = self.pull()?;
        if b != b'%' {
            return Some(b);
        }
        while self.queued < 2 {
            let Some(next) = self.inner.next() else { break };
            self.ahead[self.queued] = next;
            self.queued += 1;
        }
        if self.queued == 2 {
            if let (Some(hi), Some(lo)) = (hex(self.ahead[0]), hex(self.ahead[1])) {
                self.queued = 0;
                return Some((hi << 4) | lo);
            }
        }
        Some(b'%')
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `route` matches `path` (segment-aware for prefixes).
pub fn path_matches(route: &RouteRt, path: &str) -> bool {
    match route.path_match {
        PathMatch::Exact => path == route.path,
        PathMatch::Prefix => {
            if route.path == "/" {
                return true;
            }
            match path.strip_prefix(route.path.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/'),
                None => false,
            }
        }
    }
}

/// Whether the request carries every header and query match of `route`. Header values are
/// compared exactly, any of a repeated header's values counting; a query parameter's first
/// occurrence is compared after percent-decoding (so `a%20b` matches the value `a b`).
pub fn matches_extra(route: &RouteRt, headers: &HeaderMap, query: Option<&str>) -> bool {
    if route.unmatchable {
        return false;
    }
    let headers_ok = route
        .headers
        .iter()
        .all(|(name, value)| headers.get_all(name).iter().any(|v| v == value));
    headers_ok
        && route.query_params.iter().all(|(name, value)| {
            let query = query.unwrap_or("");
            let first = query.split('&').find_map(|pair| {
                let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
                Decode::new(n.bytes()).eq(name.bytes()).then_some(v)
            });
            first.is_some_and(|v| Decode::new(v.bytes()).eq(value.bytes()))
        })
}

/// Find the route for a request on the proxies' own listeners (the tests' shorthand).
#[cfg(test)]
pub fn find(
    rt: &Runtime,
    host: &str,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> RouteMatch {
    find_in(rt, &rt.hosts, host, path, method, headers, query)
}

/// Find the route for a request among the candidates `hosts` (a socket's, see
/// [`Runtime::hosts_for`]).
pub fn find_in(
    rt: &Runtime,
    hosts: &HostIndex,
    host: &str,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> RouteMatch {
    let host = normalise_host(host);
    let bit = method_bit(method);
    let exact = hosts.exact.get(host.as_ref()).map(Vec::as_slice);
    let wildcards = hosts
        .wildcard
        .iter()
        .filter(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
        .map(|(_, refs)| refs.as_slice());
    let tiers = exact
        .into_iter()
        .chain(wildcards)
        .chain(std::iter::once(hosts.any.as_slice()));
    for tier in tiers {
        let mut allow = 0u8;
        let mut path_hit = false;
        for &r in tier {
            let Some((product, route)) = rt.route(r) else {
                continue;
            };
            if !path_matches(route, path) {
                continue;
            }
            // The common route has no header or query match: skip the call.
            let plain = route.headers.is_empty() && route.query_params.is_empty();
            if (!plain || route.unmatchable) && !matches_extra(route, headers, query) {
                continue;
            }
            if route.methods == 0 || route.methods & bit != 0 {
                return RouteMatch::Found(r);
            }
            // An HTTPRoute's method match is part of the match, as in the Gateway API: a miss
            // is no route (404), not 405.
            if !product.http_route {
                path_hit = true;
                allow |= route.methods;
            }
        }
        if path_hit {
            return RouteMatch::MethodNotAllowed {
                allow: allow_value(allow),
            };
        }
    }
    RouteMatch::NotFound
}

/// The path to forward: the matched path replaced by the route's `rewrite`, if any.
pub fn rewrite<'p>(route: &RouteRt, path: &'p str) -> Cow<'p, str> {
    let Some(replacement) = &route.rewrite else {
        return Cow::Borrowed(path);
    };
    if route.rewrite_full_path {
        return Cow::Owned(replacement.clone());
    }
    let rest = match route.path_match {
        PathMatch::Exact => "",
        PathMatch::Prefix if route.path == "/" => path,
        PathMatch::Prefix => path.strip_prefix(route.path.as_str()).unwrap_or(""),
    };
    let mut out = String::with_capacity(replacement.len() + rest.len());
    out.push_str(replacement.trim_end_matches('/'));
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if out.len() > 1 && rest.is_empty() && !replacement.ends_with('/') {
        out.pop(); // `/v1` rewritten from an exact match stays `/v1`, not `/v1/`
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Registry;
    use tollgate_crds::product::Method as M;
    use tollgate_crds::table::*;

    fn product(id: &str, hostnames: &[&str], routes: Vec<RouteEntry>) -> ProductEntry {
        ProductEntry {
            hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
            routes,
            ..crate::runtime::fixtures::product(id)
        }
    }

    fn route(name: &str, path: &str, m: PathMatch, methods: &[M]) -> RouteEntry {
        RouteEntry {
            name: name.into(),
            path: path.into(),
            path_match: m,
            methods: methods.to_vec(),
            rewrite: None,
            rewrite_full_path: false,
            headers: Vec::new(),
            query_params: Vec::new(),
        }
    }

    /// `find` for a request with no headers and no query.
    fn plain(rt: &Runtime, host: &str, path: &str, method: &Method) -> RouteMatch {
        find(rt, host, path, method, &HeaderMap::new(), None)
    }

    fn runtime(products: Vec<ProductEntry>) -> Runtime {
        let table = RoutingTable {
            products,
            ..Default::default()
        };
        Runtime::build(&table, &Registry::default(), 1)
    }

    fn name(rt: &Runtime, m: RouteMatch) -> String {
        match m {
            RouteMatch::Found(r) => {
                let (p, route) = rt.route(r).expect("route");
                format!("{}:{}", p.id, route.name)
            }
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn prefix_is_segment_aware_and_longest_wins() {
        let rt = runtime(vec![product(
            "ns/w",
            &[],
            vec![
                route("root", "/w", PathMatch::Prefix, &[]),
                route("deep", "/w/forecast", PathMatch::Prefix, &[]),
                route("alerts", "/w/alerts", PathMatch::Exact, &[M::Get]),
            ],
        )]);
        let get = Method::GET;
        assert_eq!(name(&rt, plain(&rt, "h", "/w", &get)), "ns/w:root");
        assert_eq!(name(&rt, plain(&rt, "h", "/w/", &get)), "ns/w:root");
        assert_eq!(
            name(&rt, plain(&rt, "h", "/w/forecast/week", &get)),
            "ns/w:deep"
        );
        assert_eq!(
            name(&rt, plain(&rt, "h", "/w/forecastx", &get)),
            "ns/w:root"
        );
        assert_eq!(name(&rt, plain(&rt, "h", "/w/alerts", &get)), "ns/w:alerts");
        assert_eq!(name(&rt, plain(&rt, "h", "/w/alerts/x", &get)), "ns/w:root");
        assert_eq!(plain(&rt, "h", "/wx", &get), RouteMatch::NotFound);
        assert_eq!(plain(&rt, "h", "/", &get), RouteMatch::NotFound);
    }

    #[test]
    fn method_not_allowed_lists_allowed_methods() {
        let rt = runtime(vec![product(
            "ns/w",
            &[],
            vec![route(
                "alerts",
                "/alerts",
                PathMatch::Exact,
                &[M::Post, M::Get],
            )],
        )]);
        assert_eq!(
            plain(&rt, "h", "/alerts", &Method::DELETE),
            RouteMatch::MethodNotAllowed {
                allow: HeaderValue::from_static("GET, POST")
            }
        );
    }

    #[test]
    fn an_httproute_method_miss_is_no_route() {
        // As a Gateway API implementation answers: the method is part of the match.
        let rt = runtime(vec![ProductEntry {
            http_route: true,
            ..product(
                "ns/HTTPRoute:r:0",
                &[],
                vec![route("get", "/alerts", PathMatch::Exact, &[M::Get])],
            )
        }]);
        assert_eq!(
            plain(&rt, "h", "/alerts", &Method::POST),
            RouteMatch::NotFound
        );
        assert!(matches!(
            plain(&rt, "h", "/alerts", &Method::GET),
            RouteMatch::Found(_)
        ));
    }

    #[test]
    fn hosts_exact_then_wildcard_then_any() {
        let rt = runtime(vec![
            product("ns/any", &[], vec![route("a", "/", PathMatch::Prefix, &[])]),
            product(
                "ns/star",
                &["*.example.com"],
                vec![route("s", "/", PathMatch::Prefix, &[])],
            ),
            product(
                "ns/exact",
                &["api.example.com"],
                vec![route("e", "/x", PathMatch::Prefix, &[])],
            ),
        ]);
        let get = Method::GET;
        assert_eq!(
            name(&rt, plain(&rt, "API.example.com:8080", "/x", &get)),
            "ns/exact:e"
        );
        // Exact host has no route for /y: the wildcard tier answers.
        assert_eq!(
            name(&rt, plain(&rt, "api.example.com", "/y", &get)),
            "ns/star:s"
        );
        assert_eq!(
            name(&rt, plain(&rt, "a.b.example.com.", "/y", &get)),
            "ns/star:s"
        );
        assert_eq!(name(&rt, plain(&rt, "example.com", "/y", &get)), "ns/any:a");
        assert_eq!(name(&rt, plain(&rt, "", "/y", &get)), "ns/any:a");
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalise_host("Example.COM:80"), "example.com");
        assert_eq!(normalise_host("[::1]:8080"), "[::1]");
        assert_eq!(normalise_host("a.example."), "a.example");
        assert!(matches!(normalise_host("plain"), Cow::Borrowed("plain")));
    }

    /// Paths refused with `bad-path` and paths that must keep working, in one table.
    #[test]
    fn dangerous_paths_are_rejected() {
        for bad in [
            "/a/../b",
            "/a/..",
            "/..",
            "/a/./b",
            "/a/%2e%2e/b",
            "/a/.%2E/b",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "relative",
            "*",
            // `;`-parameters dropped, as servlet containers do before resolving dot-segments.
            "/current/..;/forecast",
            "/current/..;x=1/forecast",
            "/%2e%2e;/",
            "/.;/",
            "/a/.;",
            "/%2e;x=1/",
            "/a/..;",
            // An encoded `;` inside what becomes a dot-segment.
            "/..%3b/",
            "/..%3B/x",
            "/%2e%2e%3bx/",
            // One more round of percent-decoding.
            "/%252e%252e/",
            "/%252E%252E/x",
            "/a/%252e/b",
            "/%252e%252e%253b/",
            "/%252e%252e;/",
            "/.%252e/",
            "/%2%65%2%65/",
            "/%25%32%65%25%32%65/",
            // A separator that a second decoding reveals.
            "/a%252fb",
            "/a%255Cb",
            "/a%25%32%66b",
        ] {
            assert_eq!(check_path(bad), Err(Rejection::BadPath), "{bad}");
        }
        for ok in [
            "/",
            "/a/b",
            "/a/...",
            "/a/.well-known",
            "/.well-known/x",
            "/a%20b",
            "/a/b.json",
            "/a;b/c",
            "/v1/items;version=2",
            "/..foo",
            "/%2e%2efoo",
            "/%252e%252efoo",
            "/...;/",
            "/;x/",
            "/a;/b",
            "/%25",
            "/%",
            "/%2",
            "/100%25/x",
            "/a%253bb",
            "/a/.x;..",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
    }

    fn with_matches(
        name: &str,
        methods: &[M],
        headers: &[(&str, &str)],
        query: &[(&str, &str)],
    ) -> RouteEntry {
        let vm = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(n, v)| tollgate_crds::product::ValueMatch {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect()
        };
        RouteEntry {
            headers: vm(headers),
            query_params: vm(query),
            ..route(name, "/w", PathMatch::Prefix, methods)
        }
    }

    #[test]
    fn header_and_query_matches_rank_after_the_path_as_in_the_gateway_api() {
        // Declared least specific first: the index must order them, not the table.
        let rt = runtime(vec![product(
            "ns/w",
            &[],
            vec![
                with_matches("any", &[], &[], &[]),
                with_matches("query", &[], &[], &[("units", "metric")]),
                with_matches("header", &[], &[("x-version", "2")], &[]),
                with_matches("both", &[], &[("x-version", "2"), ("x-beta", "on")], &[]),
                with_matches("post", &[M::Post], &[], &[]),
            ],
        )]);
        let get = Method::GET;
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (n, v) in pairs {
                map.append(*n, HeaderValue::from_static(v));
            }
            map
        };
        let at = |headers: &HeaderMap, query: Option<&str>, method: &Method| {
            name(&rt, find(&rt, "h", "/w/x", method, headers, query))
        };
        assert_eq!(at(&h(&[]), None, &get), "ns/w:any");
        assert_eq!(at(&h(&[("x-version", "2")]), None, &get), "ns/w:header");
        // Any of a repeated header's values may match; names are case-insensitive.
        assert_eq!(
            at(&h(&[("X-Version", "1"), ("x-version", "2")]), None, &get),
            "ns/w:header"
        );
        assert_eq!(at(&h(&[("x-version", "3")]), None, &get), "ns/w:any");
        // More header matches win; a value differing in case does not match.
        assert_eq!(
            at(&h(&[("x-version", "2"), ("x-beta", "on")]), None, &get),
            "ns/w:both"
        );
        assert_eq!(
            at(&h(&[("x-version", "2"), ("x-beta", "ON")]), None, &get),
            "ns/w:header"
        );
        // Header matches rank before query matches.
        assert_eq!(
            at(&h(&[("x-version", "2")]), Some("units=metric"), &get),
            "ns/w:header"
        );
        assert_eq!(at(&h(&[]), Some("a=1&units=metric"), &get), "ns/w:query");
        // The first occurrence counts, percent-decoded.
        assert_eq!(
            at(&h(&[]), Some("units=imperial&units=metric"), &get),
            "ns/w:any"
        );
        assert_eq!(at(&h(&[]), Some("unit%73=metri%63"), &get), "ns/w:query");
        assert_eq!(at(&h(&[]), Some("units"), &get), "ns/w:any");
        // A route with a method beats one without, before header matches are counted.
        assert_eq!(
            at(&h(&[("x-version", "2")]), None, &Method::POST),
            "ns/w:post"
        );
    }

    #[test]
    fn a_route_whose_matches_cannot_be_represented_matches_nothing() {
        let mut bad = with_matches("bad", &[], &[("x-version", "2")], &[]);
        bad.headers[0].value = "a\nb".to_string();
        let rt = runtime(vec![product("ns/w", &[], vec![bad])]);
        let mut headers = HeaderMap::new();
        headers.insert("x-version", HeaderValue::from_static("2"));
        assert_eq!(
            find(&rt, "h", "/w", &Method::GET, &headers, None),
            RouteMatch::NotFound
        );
        assert_eq!(plain(&rt, "h", "/w", &Method::GET), RouteMatch::NotFound);
    }

    #[test]
    fn rewrites_replace_the_matched_part() {
        let mut r = RouteRt {
            name: "r".into(),
            path: "/weather/current".into(),
            path_match: PathMatch::Prefix,
            methods: 0,
            rewrite: Some("/v1/now".into()),
            rewrite_full_path: false,
            headers: Vec::new(),
            query_params: Vec::new(),
            unmatchable: false,
        };
        assert_eq!(rewrite(&r, "/weather/current"), "/v1/now");
        assert_eq!(rewrite(&r, "/weather/current/x"), "/v1/now/x");
        r.rewrite = Some("/".into());
        assert_eq!(rewrite(&r, "/weather/current/x"), "/x");
        assert_eq!(rewrite(&r, "/weather/current"), "/");
        r.rewrite = None;
        assert_eq!(rewrite(&r, "/weather/current/x"), "/weather/current/x");
        r.path_match = PathMatch::Exact;
        r.rewrite = Some("/v1".into());
        assert_eq!(rewrite(&r, "/weather/current"), "/v1");
        // rewriteFullPath (the Gateway API's ReplaceFullPath) on a prefix: the whole path.
        r.path_match = PathMatch::Prefix;
        r.rewrite_full_path = true;
        assert_eq!(rewrite(&r, "/weather/current/x/y"), "/v1");
        assert_eq!(rewrite(&r, "/weather/current"), "/v1");
    }

    /// One round of percent-decoding, written plainly: the definition [`Decode`] streams.
    fn decode(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let escape = bytes.get(i + 1..i + 3).and_then(|h| {
                let h = std::str::from_utf8(h).ok()?;
                u8::from_str_radix(h, 16)
                    .ok()
                    .filter(|_| h.bytes().all(|b| b.is_ascii_hexdigit()))
            });
            match escape {
                Some(b) if bytes[i] == b'%' => {
                    out.push(b);
                    i += 3;
                }
                _ => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        out
    }

    /// Path pieces built from the tokens the checks care about, so encoded and double-encoded
    /// dots, `;` and separators meet in every combination (plain random bytes rarely spell
    /// `%252e`).
    fn segments() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy;
        let tokens = vec![
            ".", "%2e", "%2E", "%25", "%252e", "%252E", "%3b", "%253B", ";", "a", "%2f", "%252F",
            "%5c", "%255c", "%", "2", "e", "/", "%32", "%65",
        ];
        proptest::collection::vec(proptest::sample::select(tokens), 0..8).prop_map(|t| t.concat())
    }

    proptest::proptest! {
        /// The byte-wise checks decide exactly as their definitions: decode twice, cut at the
        /// first `;`, compare with `.` and `..`; or look for a decoded `/` or `\`.
        #[test]
        fn dot_segments_and_separators_as_defined(segment in segments()) {
            for part in segment.split('/') {
                let twice = decode(&decode(part.as_bytes()));
                let base = twice.split(|&b| b == b';').next().unwrap_or_default();
                let dot = base == b"." || base == b"..";
                proptest::prop_assert_eq!(is_dot_segment(part.as_bytes()), dot, "{:?}", part);
                let separator = twice.contains(&b'/') || twice.contains(&b'\\');
                proptest::prop_assert_eq!(hides_separator(part.as_bytes()), separator, "{:?}", part);
            }
        }

        /// Every segment the older check refused (`.`/`..` with dots plain or as `%2e`) is
        /// still refused: the new forms only add to it.
        #[test]
        fn older_dot_segments_stay_refused(segment in "[.%2eE]{0,8}") {
            let old = segment.len() <= 6 && {
                let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
                decoded == "." || decoded == ".."
            };
            if old {
                proptest::prop_assert!(is_dot_segment(segment.as_bytes()), "{:?}", segment);
            }
        }
    }
}
