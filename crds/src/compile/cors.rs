//! `spec.cors` → [`CorsEntry`]: origins (exact, or `*.` subdomain patterns); a wildcard with
//! credentials only where the Gateway API defines it (an HTTPRoute `CORS` filter).

use super::Report;
use crate::policy::CorsPolicy;
use crate::reasons;
use crate::syntax::is_header_name;
use crate::table::CorsEntry;

/// Whose CORS settings these are, which decides what `*` with credentials means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Meaning {
    /// An ApiPolicy's `cors`: refused (browsers refuse `*` with credentials, and echoing any
    /// origin with credentials would let every site act as the user).
    ApiPolicy,
    /// An HTTPRoute `CORS` filter: the Gateway API requires echoing the request's origin and
    /// headers with credentials (`InsecureCors` warns on the HTTPRoute, see `gateway::targets`).
    GatewayApi,
}

/// Check and normalise a CORS policy (errors go to `report`).
pub(crate) fn compile(c: &CorsPolicy, meaning: Meaning, report: &mut Report<'_>) -> CorsEntry {
    let mut origins: Vec<String> = Vec::with_capacity(c.allow_origins.len());
    let wildcard = c.allow_origins.iter().any(|o| o == "*");
    if c.allow_origins.is_empty() {
        report.error(
            "spec.cors.allowOrigins",
            reasons::INVALID_CORS,
            "allowOrigins is empty, so no browser origin could call; list origins such as https://app.example.com or https://*.example.com (or `*` without credentials)",
        );
    }
    for (i, origin) in c.allow_origins.iter().enumerate() {
        if origin == "*" {
            continue;
        }
        match normalize_origin(origin) {
            Some(o) => origins.push(o),
            None => report.error(
                format!("spec.cors.allowOrigins[{i}]"),
                reasons::INVALID_CORS,
                format!(
                    "`{origin}` is not an origin; write scheme://host[:port] without a path, e.g. https://app.example.com or https://*.example.com"
                ),
            ),
        }
    }
    let allow_credentials = c.allow_credentials.unwrap_or(false);
    if wildcard && allow_credentials && meaning == Meaning::ApiPolicy {
        report.error(
            "spec.cors.allowCredentials",
            reasons::INVALID_CORS,
            "a wildcard origin cannot be combined with allowCredentials (browsers refuse it, and echoing any origin with credentials would let every site act as the user); list the origins instead",
        );
    }
    if wildcard && !origins.is_empty() {
        report.warning(
            "spec.cors.allowOrigins",
            reasons::INVALID_CORS,
            "`*` already allows every origin; the other entries have no effect",
        );
    }
    let allow_headers = header_list(&c.allow_headers, "spec.cors.allowHeaders", report);
    let expose_headers = header_list(&c.expose_headers, "spec.cors.exposeHeaders", report);
    let mut allow_methods = c.allow_methods.clone();
    allow_methods.sort();
    allow_methods.dedup();
    let allow_origins = if wildcard {
        vec!["*".to_string()]
    } else {
        origins.sort();
        origins.dedup();
        origins
    };
    CorsEntry {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        allow_credentials,
        wildcards_with_credentials: allow_credentials && meaning == Meaning::GatewayApi,
        max_age_secs: c.max_age,
    }
}

fn header_list(list: &[String], field: &str, report: &mut Report<'_>) -> Vec<String> {
    let mut out = Vec::with_capacity(list.len());
    for (i, name) in list.iter().enumerate() {
        if is_header_name(name) {
            out.push(name.to_ascii_lowercase());
        } else {
            report.error(
                format!("{field}[{i}]"),
                reasons::INVALID_CORS,
                format!("`{name}` is not a valid HTTP header name; use letters, digits and -"),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `scheme://host[:port]` lowercased, as browsers send it in `Origin`; the host may start with
/// `*.` (any number of labels in front of the rest, as the Gateway API's CORS filter defines).
fn normalize_origin(text: &str) -> Option<String> {
    let lower = text.trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() {
        return None;
    }
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    let ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    (ok && !host.is_empty() && !host.starts_with([':', '.'])).then_some(lower)
}

#[cfg(test)]
mod tests {
    use super::normalize_origin;

    #[test]
    fn origins() {
        assert_eq!(
            normalize_origin("https://App.Example.com/").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            normalize_origin("http://localhost:3000").as_deref(),
            Some("http://localhost:3000")
        );
        assert_eq!(normalize_origin("app.example.com"), None);
        assert_eq!(normalize_origin("https://a.example/path"), None);
        assert_eq!(normalize_origin("ftp://a.example"), None);
        assert_eq!(normalize_origin("https://"), None);
        assert_eq!(
            normalize_origin("https://*.Bar.com").as_deref(),
            Some("https://*.bar.com")
        );
        assert_eq!(
            normalize_origin("http://*.bar.com:8080").as_deref(),
            Some("http://*.bar.com:8080")
        );
        for bad in [
            "https://*.",
            "https://*bar.com",
            "https://a.*.bar.com",
            "https://*.:80",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }
}
