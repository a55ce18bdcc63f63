//! The gateway's answer to an HTTPRoute rule's `RequestRedirect` filter: the status it names and
//! a `Location` built from the request, as the Gateway API says (each part the filter leaves out
//! is the request's own; the port is the one the client connected to unless the scheme is
//! replaced, and a scheme's well-known port is left out).

use bytes::Bytes;
use http::header::{HeaderValue, LOCATION};
use http::uri::{Authority, Scheme};
use http::Response;
use http_body_util::{Either, Full};

use crate::forward::Redirect;
use crate::message::headers::HeaderOps;
use crate::problem::Rejection;
use crate::respond::body::Inner;

/// The `Location` for a request with `host`, received over TLS or not, to `path` (the
/// request's, or as the filter's `path` replaces it) and `query`; none when neither the filter
/// nor the request names a host.
pub fn location(
    r: &Redirect,
    tls: bool,
    host: Option<&HeaderValue>,
    path: &str,
    query: Option<&str>,
) -> Option<String> {
    let authority: Option<Authority> = host
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse().ok());
    let hostname = r
        .hostname
        .as_deref()
        .or(authority.as_ref().map(Authority::host))
        .filter(|h| !h.is_empty())?;
    let scheme = r
        .scheme
        .clone()
        .unwrap_or(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => Some(p),
        // A new scheme: its well-known port.
        (None, Some(_)) => None,
        (None, None) => authority.as_ref().and_then(Authority::port_u16),
    };
    let well_known = if scheme == Scheme::HTTPS { 443 } else { 80 };
    let query = query.map_or(String::new(), |q| format!("?{q}"));
    Some(match port.filter(|p| *p != well_known) {
        Some(p) => format!("{scheme}://{hostname}:{p}{path}{query}"),
        None => format!("{scheme}://{hostname}{path}{query}"),
    })
}

/// The redirect response, with the product's response header policy and `X-Request-Id`.
pub fn response(
    r: &Redirect,
    tls: bool,
    host: Option<&HeaderValue>,
    (path, query): (&str, Option<&str>),
    ops: &HeaderOps,
    request_id: &HeaderValue,
) -> Result<Response<Inner>, Rejection> {
    let location = location(r, tls, host, path, query).ok_or(Rejection::MissingHost)?;
    // Built from a parsed authority and path, or the filter's hostname, which the API server
    // validated as a DNS name; a value that still is not a header value is the client's Host.
    let location = HeaderValue::try_from(location).map_err(|_| Rejection::BadHost)?;
    let mut resp: Response<Full<Bytes>> = Response::new(Full::default());
    *resp.status_mut() = r.status;
    resp.headers_mut().insert(LOCATION, location);
    super::rewrite_headers(resp.headers_mut(), ops, None, request_id);
    Ok(resp.map(Either::Right))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{StatusCode, Uri};

    fn redirect(scheme: Option<Scheme>, hostname: Option<&str>, port: Option<u16>) -> Redirect {
        Redirect {
            scheme,
            hostname: hostname.map(str::to_string),
            port,
            status: StatusCode::FOUND,
        }
    }

    fn at(r: &Redirect, tls: bool, host: Option<&str>, uri: &str) -> Option<String> {
        let host = host.map(|h| HeaderValue::from_str(h).expect("host"));
        let uri: Uri = uri.parse().expect("uri");
        location(r, tls, host.as_ref(), uri.path(), uri.query())
    }

    #[test]
    fn each_part_left_out_is_the_requests_own() {
        let host_only = redirect(None, Some("example.org"), None);
        assert_eq!(
            at(&host_only, false, Some("gw.local"), "/a/b?x=1").as_deref(),
            Some("http://example.org/a/b?x=1")
        );
        // The port the client connected to stays while the scheme does.
        assert_eq!(
            at(&host_only, false, Some("gw.local:8080"), "/").as_deref(),
            Some("http://example.org:8080/")
        );
        assert_eq!(
            at(&host_only, true, Some("gw.local:443"), "/").as_deref(),
            Some("https://example.org/")
        );
        let nothing = redirect(None, None, None);
        assert_eq!(
            at(&nothing, false, Some("gw.local:8080"), "/p").as_deref(),
            Some("http://gw.local:8080/p")
        );
        assert_eq!(at(&nothing, false, None, "/p"), None, "no host anywhere");
    }

    #[test]
    fn a_new_scheme_gets_its_well_known_port_unless_one_is_named() {
        let https = redirect(Some(Scheme::HTTPS), None, None);
        assert_eq!(
            at(&https, false, Some("gw.local:8080"), "/p").as_deref(),
            Some("https://gw.local/p")
        );
        let https_port = redirect(Some(Scheme::HTTPS), None, Some(8443));
        assert_eq!(
            at(&https_port, false, Some("gw.local:8080"), "/p").as_deref(),
            Some("https://gw.local:8443/p")
        );
        let port_80 = redirect(None, None, Some(80));
        assert_eq!(
            at(&port_80, false, Some("gw.local:8080"), "/").as_deref(),
            Some("http://gw.local/")
        );
    }
}
