//! Route matching: a pure function of the runtime, host, path and method.
//!
//! Order: the most specific host tier that has a route for the path decides (exact hostname,
//! then `*.suffix` longest first, then products without hostnames); inside a tier, exact paths
//! before prefixes and longer before shorter. A path that matches but whose method does not gives
//! 405 with the union of the matching routes' methods.

use std::borrow::Cow;

use http::header::HeaderValue;
use http::Method;
use tollgate_crds::product::PathMatch;

use crate::message::methods::{allow_value, method_bit};
use crate::problem::Rejection;
use crate::runtime::{RouteRef, RouteRt, Runtime};

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
/// `.`/`..` segments (plain or percent-encoded), encoded `/` or `\`, or a raw `\`.
pub fn check_path(path: &str) -> Result<(), Rejection> {
    if !path.starts_with('/') || path.as_bytes().contains(&b'\\') {
        return Err(Rejection::BadPath);
    }
    let encoded_separator = path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'f') | (b'5', b'c')
            )
    });
    if encoded_separator {
        return Err(Rejection::BadPath);
    }
    // Byte-wise and without allocating: this runs on every request.
    if path.as_bytes().split(|&b| b == b'/').any(is_dot_segment) {
        return Err(Rejection::BadPath);
    }
    Ok(())
}

/// Whether `segment` is `.` or `..`, each dot written as `.` or `%2e`/`%2E`.
fn is_dot_segment(segment: &[u8]) -> bool {
    let (mut dots, mut rest) = (0, segment);
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
            _ => return false,
        };
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
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

/// Find the route for a request.
pub fn find(rt: &Runtime, host: &str, path: &str, method: &Method) -> RouteMatch {
    let host = normalise_host(host);
    let bit = method_bit(method);
    let exact = rt.hosts.exact.get(host.as_ref()).map(Vec::as_slice);
    let wildcards = rt
        .hosts
        .wildcard
        .iter()
        .filter(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
        .map(|(_, refs)| refs.as_slice());
    let tiers = exact
        .into_iter()
        .chain(wildcards)
        .chain(std::iter::once(rt.hosts.any.as_slice()));
    for tier in tiers {
        let mut allow = 0u8;
        let mut path_hit = false;
        for &r in tier {
            let Some((_, route)) = rt.route(r) else {
                continue;
            };
            if !path_matches(route, path) {
                continue;
            }
            if route.methods == 0 || route.methods & bit != 0 {
                return RouteMatch::Found(r);
            }
            path_hit = true;
            allow |= route.methods;
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
        }
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
        assert_eq!(name(&rt, find(&rt, "h", "/w", &get)), "ns/w:root");
        assert_eq!(name(&rt, find(&rt, "h", "/w/", &get)), "ns/w:root");
        assert_eq!(
            name(&rt, find(&rt, "h", "/w/forecast/week", &get)),
            "ns/w:deep"
        );
        assert_eq!(name(&rt, find(&rt, "h", "/w/forecastx", &get)), "ns/w:root");
        assert_eq!(name(&rt, find(&rt, "h", "/w/alerts", &get)), "ns/w:alerts");
        assert_eq!(name(&rt, find(&rt, "h", "/w/alerts/x", &get)), "ns/w:root");
        assert_eq!(find(&rt, "h", "/wx", &get), RouteMatch::NotFound);
        assert_eq!(find(&rt, "h", "/", &get), RouteMatch::NotFound);
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
            find(&rt, "h", "/alerts", &Method::DELETE),
            RouteMatch::MethodNotAllowed {
                allow: HeaderValue::from_static("GET, POST")
            }
        );
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
            name(&rt, find(&rt, "API.example.com:8080", "/x", &get)),
            "ns/exact:e"
        );
        // Exact host has no route for /y: the wildcard tier answers.
        assert_eq!(
            name(&rt, find(&rt, "api.example.com", "/y", &get)),
            "ns/star:s"
        );
        assert_eq!(
            name(&rt, find(&rt, "a.b.example.com.", "/y", &get)),
            "ns/star:s"
        );
        assert_eq!(name(&rt, find(&rt, "example.com", "/y", &get)), "ns/any:a");
        assert_eq!(name(&rt, find(&rt, "", "/y", &get)), "ns/any:a");
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalise_host("Example.COM:80"), "example.com");
        assert_eq!(normalise_host("[::1]:8080"), "[::1]");
        assert_eq!(normalise_host("a.example."), "a.example");
        assert!(matches!(normalise_host("plain"), Cow::Borrowed("plain")));
    }

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
        ] {
            assert_eq!(check_path(bad), Err(Rejection::BadPath), "{bad}");
        }
        for ok in [
            "/",
            "/a/b",
            "/a/...",
            "/a/.well-known",
            "/a%20b",
            "/a/b.json",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rewrites_replace_the_matched_part() {
        let mut r = RouteRt {
            name: "r".into(),
            path: "/weather/current".into(),
            path_match: PathMatch::Prefix,
            methods: 0,
            rewrite: Some("/v1/now".into()),
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
    }

    proptest::proptest! {
        /// The byte-wise check decides exactly as the definition it replaced: lowercase the
        /// segment, decode `%2e`, compare with `.` and `..`.
        #[test]
        fn dot_segments_as_defined(segment in "[.%2eE/a]{0,8}") {
            for part in segment.split('/') {
                let by_definition = part.len() <= 6 && {
                    let decoded = part.to_ascii_lowercase().replace("%2e", ".");
                    decoded == "." || decoded == ".."
                };
                proptest::prop_assert_eq!(is_dot_segment(part.as_bytes()), by_definition, "{:?}", part);
            }
        }
    }
}
