//! ApiPolicy → [`PolicyEntry`]. Each feature is checked here or in its own module (cors,
//! validation, backend_tls); a policy with any error is left out, and so are its products.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::plans::rate_limit;
use super::secrets::Secrets;
use super::{backend_tls, cors, validation, Input, Outcomes, Report};
use crate::diagnostics::Diagnostic;
use crate::gateway::attach::Attached;
use crate::gateway::attach::TOLLGATE_GROUP;
use crate::policy::{ApiPolicy, HeaderOps, JwtPolicy, PolicyTargetRef, ResponseRewrite};
use crate::product::Product;
use crate::product::GATEWAY_API_GROUP;
use crate::reasons;
use crate::syntax::{is_header_name, is_header_value};
use crate::table::{
    HeaderOpsEntry, IpFilterEntry, JwtEntry, JwtIssuerEntry, PolicyEntry, RequiredScopesEntry,
    RewriteEntry,
};

/// Most `targetRefs` (the CRD's `maxItems`).
const MAX_TARGET_REFS: usize = 16;

/// Clock skew when `jwt.clockSkew` is not set.
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 60;
/// Largest clock skew accepted: more would keep expired tokens alive for too long.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// Headers a policy may not set: they frame the message or belong to one connection, so setting
/// them would let a policy break framing (request smuggling) or the gateway's own hop handling.
const GATEWAY_MANAGED: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Compile every ApiPolicy.
///
/// `products` (and `attachment`, the Products policies attach to through their `targetRefs`) are
/// only read to check `jwt.requiredScopes[].routes` against the routes of the products that use
/// each policy (a warning, since policies are reusable).
pub(crate) fn compile(
    inputs: &[Input<'_, ApiPolicy>],
    products: &[Input<'_, Product>],
    attachment: &BTreeMap<String, Vec<Attached>>,
    secrets: &Secrets<'_>,
    gateway_cors: &BTreeSet<String>,
    out: &mut Vec<Diagnostic>,
) -> Outcomes<PolicyEntry> {
    let mut outcomes = Outcomes::default();
    for input in inputs {
        let mut report = Report::new(&input.object, out);
        // Route names of every product that lists this policy (same namespace) or that it
        // attaches to.
        let user_routes: BTreeSet<&str> = products
            .iter()
            .filter(|p| {
                (p.object.namespace == input.object.namespace
                    && p.value.spec.policies.contains(&input.object.name))
                    || attachment.get(&p.id()).is_some_and(|list| {
                        list.iter().any(|a| {
                            a.namespace == input.object.namespace && a.name == input.object.name
                        })
                    })
            })
            .flat_map(|p| p.value.spec.routes.iter().map(|r| r.name.as_str()))
            .collect();
        let cors = if gateway_cors.contains(&input.id()) {
            cors::Meaning::GatewayApi
        } else {
            cors::Meaning::ApiPolicy
        };
        let entry = compile_one(input, &user_routes, secrets, cors, &mut report);
        let outcome = report.finish(entry);
        outcomes.insert(&input.object, outcome);
    }
    outcomes
}

fn compile_one(
    input: &Input<'_, ApiPolicy>,
    user_routes: &BTreeSet<&str>,
    secrets: &Secrets<'_>,
    cors_meaning: cors::Meaning,
    report: &mut Report<'_>,
) -> Option<PolicyEntry> {
    let spec = &input.value.spec;
    let object = &input.object;
    target_refs(&spec.target_refs, report);

    let headers = spec.headers.clone().unwrap_or_default();
    let request_headers = header_ops(headers.request.as_ref(), "spec.headers.request", report);
    let response_headers = header_ops(headers.response.as_ref(), "spec.headers.response", report);
    let ip_filter = spec.ip_filter.as_ref().map(|f| IpFilterEntry {
        allow: cidrs(&f.allow, "spec.ipFilter.allow", report),
        deny: cidrs(&f.deny, "spec.ipFilter.deny", report),
    });

    let jwt = spec.jwt.as_ref().map(|j| jwt(j, user_routes, report));
    let cors = spec
        .cors
        .as_ref()
        .map(|c| cors::compile(c, cors_meaning, report));
    let request_validation = spec
        .request_validation
        .as_ref()
        .map(|v| validation::compile(v, user_routes, report));
    let response_rewrite = rewrites(&spec.response_rewrite, report);
    let backend_tls = spec
        .backend_tls
        .as_ref()
        .map(|b| backend_tls::compile(b, &object.namespace, secrets, report));
    let anonymous_rate_limit = spec
        .anonymous_rate_limit
        .as_ref()
        .and_then(|rl| rate_limit(rl, "spec.anonymousRateLimit", report));

    (!report.has_errors()).then(|| PolicyEntry {
        id: input.id(),
        request_headers,
        response_headers,
        ip_filter,
        jwt,
        cors,
        request_validation,
        response_rewrite,
        backend_tls,
        anonymous_rate_limit,
        forward_authorization: spec.forward_authorization.unwrap_or(false),
    })
}

/// The CRD's limits and CEL rules on `spec.targetRefs`, re-checked for standalone mode. Where
/// each target leads is `gateway::attach`'s to say (a warning there, not an error here).
fn target_refs(refs: &[PolicyTargetRef], report: &mut Report<'_>) {
    if refs.len() > MAX_TARGET_REFS {
        report.error(
            "spec.targetRefs",
            reasons::INVALID_TARGET_REFS,
            format!("at most {MAX_TARGET_REFS} targets; target a Gateway to cover its routes"),
        );
    }
    for (i, t) in refs.iter().enumerate() {
        let field = format!("spec.targetRefs[{i}]");
        let allowed = matches!(
            (t.group.as_str(), t.kind.as_str()),
            (GATEWAY_API_GROUP, "Gateway" | "HTTPRoute") | (TOLLGATE_GROUP, "Product")
        );
        if !allowed {
            report.error(
                field,
                reasons::INVALID_TARGET_REFS,
                format!(
                    "{}/{} cannot be targeted; name a gateway.networking.k8s.io Gateway or HTTPRoute, or a tollgate.dev Product",
                    t.group, t.kind
                ),
            );
        } else if refs[..i].contains(t) {
            report.error(
                field,
                reasons::INVALID_TARGET_REFS,
                "this target is listed twice; keep one entry",
            );
        }
    }
}

/// Check and normalise `spec.jwt` (errors go to `report`; the entry is used only without them).
fn jwt(j: &JwtPolicy, user_routes: &BTreeSet<&str>, report: &mut Report<'_>) -> JwtEntry {
    if j.issuers.is_empty() {
        report.error(
            "spec.jwt.issuers",
            reasons::INVALID_FIELD,
            "jwt needs at least one issuer: add {issuer, jwksUri} (or an inline jwks)",
        );
    }
    let mut issuers = Vec::with_capacity(j.issuers.len());
    let mut seen = BTreeSet::new();
    for (i, iss) in j.issuers.iter().enumerate() {
        let at = format!("spec.jwt.issuers[{i}]");
        if iss.issuer.trim().is_empty() {
            report.error(
                format!("{at}.issuer"),
                reasons::INVALID_FIELD,
                "issuer is empty; set it to the exact `iss` value of the tokens",
            );
        } else if !seen.insert(iss.issuer.as_str()) {
            report.error(
                format!("{at}.issuer"),
                reasons::INVALID_FIELD,
                format!("issuer `{}` is listed twice; keep one entry", iss.issuer),
            );
        }
        match (&iss.jwks_uri, &iss.jwks) {
            (Some(_), Some(_)) | (None, None) => report.error(
                at.clone(),
                reasons::INVALID_FIELD,
                "set exactly one of jwksUri (where the issuer publishes its keys) or jwks (the keys inline)",
            ),
            (Some(uri), None) if !jwks_uri_allowed(uri) => report.error(
                format!("{at}.jwksUri"),
                reasons::INSECURE_JWKS_URI,
                format!(
                    "`{uri}` is not an https:// URL; keys fetched in the clear could be replaced in transit. \
                     Use https:// (plain http:// is accepted only for a loopback address, for local development)"
                ),
            ),
            (None, Some(doc)) => {
                if let Err(why) = check_inline_jwks(doc) {
                    report.error(
                        format!("{at}.jwks"),
                        reasons::INVALID_JWKS,
                        format!("{why}; paste the issuer's JWKS document: {{\"keys\": [{{\"kty\": ...}}]}}"),
                    );
                }
            }
            (Some(_), None) => {}
        }
        let mut audiences = iss.audiences.clone();
        audiences.sort();
        audiences.dedup();
        issuers.push(JwtIssuerEntry {
            issuer: iss.issuer.clone(),
            jwks_uri: iss.jwks_uri.clone(),
            jwks: iss.jwks.clone(),
            audiences,
        });
    }

    let clock_skew_secs = match j.clock_skew.as_deref() {
        None => DEFAULT_CLOCK_SKEW_SECS,
        Some(text) => match parse_skew(text) {
            Some(s) if s <= MAX_CLOCK_SKEW_SECS => s,
            _ => {
                report.error(
                    "spec.jwt.clockSkew",
                    reasons::INVALID_FIELD,
                    format!(
                        "`{text}` is not a clock skew; write it like 30s or 1m (at most {MAX_CLOCK_SKEW_SECS}s)"
                    ),
                );
                DEFAULT_CLOCK_SKEW_SECS
            }
        },
    };

    let mut required_scopes = Vec::with_capacity(j.required_scopes.len());
    for (i, rule) in j.required_scopes.iter().enumerate() {
        let at = format!("spec.jwt.requiredScopes[{i}]");
        if rule.scopes.is_empty() {
            report.error(
                format!("{at}.scopes"),
                reasons::INVALID_SCOPE,
                "scopes is empty; list the scopes a token must carry",
            );
        }
        for (k, scope) in rule.scopes.iter().enumerate() {
            if !is_scope_token(scope) {
                report.error(
                    format!("{at}.scopes[{k}]"),
                    reasons::INVALID_SCOPE,
                    format!(
                        "`{scope}` is not a scope: use visible ASCII without spaces, quotes or backslashes, e.g. weather.write"
                    ),
                );
            }
        }
        for (k, route) in rule.routes.iter().enumerate() {
            if !user_routes.contains(route.as_str()) {
                report.warning(
                    format!("{at}.routes[{k}]"),
                    reasons::UNKNOWN_ROUTE,
                    format!(
                        "no product that uses this policy has a route named `{route}`, so this rule applies nowhere; check the name{}",
                        crate::compile::suggestion(route, user_routes.iter().copied())
                    ),
                );
            }
        }
        let mut scopes = rule.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let mut routes = rule.routes.clone();
        routes.sort();
        routes.dedup();
        let mut methods = rule.methods.clone();
        methods.dedup();
        required_scopes.push(RequiredScopesEntry {
            methods,
            routes,
            scopes,
        });
    }

    JwtEntry {
        issuers,
        clock_skew_secs,
        required_scopes,
    }
}

/// `https://host…`, or `http://` to a loopback host (the proxy applies the same rule).
pub(crate) fn jwks_uri_allowed(uri: &str) -> bool {
    let (scheme, rest) = match uri.split_once("://") {
        Some(parts) => parts,
        None => return false,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return false;
    }
    if scheme.eq_ignore_ascii_case("https") {
        return true;
    }
    scheme.eq_ignore_ascii_case("http")
        && (host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()))
}

/// A JSON object whose `keys` is a non-empty array of objects that each have a `kty`.
fn check_inline_jwks(doc: &str) -> Result<(), &'static str> {
    let v: serde_json::Value =
        serde_json::from_str(doc).map_err(|_| "the inline jwks is not valid JSON")?;
    let keys = v
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("the inline jwks has no \"keys\" array")?;
    if keys.is_empty() {
        return Err("the inline jwks has no keys");
    }
    if !keys
        .iter()
        .all(|k| k.get("kty").is_some_and(|t| t.is_string()))
    {
        return Err("every key of the inline jwks needs a \"kty\"");
    }
    Ok(())
}

/// `30s` or `1m`.
fn parse_skew(text: &str) -> Option<u64> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        _ => None,
    }
}

/// RFC 6749 §3.3 `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Largest number of replacements per policy (each is a scan over every textual response).
const MAX_REWRITES: usize = 16;

/// Check `responseRewrite`: non-empty, not repeated, bounded.
fn rewrites(list: &[ResponseRewrite], report: &mut Report<'_>) -> Vec<RewriteEntry> {
    if list.len() > MAX_REWRITES {
        report.error(
            "spec.responseRewrite",
            reasons::INVALID_REWRITE,
            format!("at most {MAX_REWRITES} replacements per policy; each one scans every textual response"),
        );
    }
    let mut out: Vec<RewriteEntry> = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        if r.from.is_empty() {
            report.error(
                format!("spec.responseRewrite[{i}].from"),
                reasons::INVALID_REWRITE,
                "from is empty; set the literal text to find",
            );
        } else if r.from.len() > 1024 {
            report.error(
                format!("spec.responseRewrite[{i}].from"),
                reasons::INVALID_REWRITE,
                "from is longer than 1024 bytes; find a shorter distinctive text",
            );
        } else if out.iter().any(|e| e.from == r.from) {
            report.error(
                format!("spec.responseRewrite[{i}].from"),
                reasons::INVALID_REWRITE,
                format!(
                    "`{}` is replaced twice; keep one entry (they apply in order)",
                    r.from
                ),
            );
        } else {
            out.push(RewriteEntry {
                from: r.from.clone(),
                to: r.to.clone(),
            });
        }
    }
    // Order matters (replacements apply in the order written), so it is kept.
    out
}

/// Lowercase and check header names and values.
fn header_ops(ops: Option<&HeaderOps>, field: &str, report: &mut Report<'_>) -> HeaderOpsEntry {
    let Some(ops) = ops else {
        return HeaderOpsEntry::default();
    };
    let set = header_values(&ops.set, &format!("{field}.set"), "set", report);
    let add = header_values(&ops.add, &format!("{field}.add"), "added", report);

    let mut remove = Vec::new();
    for (i, name) in ops.remove.iter().enumerate() {
        if is_header_name(name) {
            remove.push(name.to_ascii_lowercase());
        } else {
            report.error(
                format!("{field}.remove[{i}]"),
                reasons::INVALID_HEADER_NAME,
                format!("`{name}` is not a valid HTTP header name; use letters, digits and -"),
            );
        }
    }
    remove.sort();
    remove.dedup();
    HeaderOpsEntry { set, add, remove }
}

/// The `set` or `add` map of a policy's header operations, checked: `(lowercased name, value)`,
/// sorted. `verb` is how the message says what was asked ("set", "added").
fn header_values(
    map: &BTreeMap<String, String>,
    field: &str,
    verb: &str,
    report: &mut Report<'_>,
) -> Vec<(String, String)> {
    let mut set: Vec<(String, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    // BTreeMap iteration is sorted, so which of two case-variants is reported is deterministic.
    for (name, value) in map {
        let at = format!("{field}.{name}");
        let lower = name.to_ascii_lowercase();
        if !is_header_name(name) {
            report.error(
                at,
                reasons::INVALID_HEADER_NAME,
                format!("`{name}` is not a valid HTTP header name; use letters, digits and -"),
            );
        } else if GATEWAY_MANAGED.contains(&lower.as_str()) {
            report.error(
                at,
                reasons::INVALID_HEADER_NAME,
                format!(
                    "`{name}` is managed by the gateway and cannot be {verb} by a policy; remove it"
                ),
            );
        } else if !seen.insert(lower.clone()) {
            report.error(
                at,
                reasons::INVALID_HEADER_NAME,
                format!(
                    "`{name}` is {verb} twice (header names are case-insensitive); keep one of them"
                ),
            );
        } else if !is_header_value(value) {
            report.error(
                at,
                reasons::INVALID_HEADER_VALUE,
                "the value contains control characters (such as a line break); remove them",
            );
        } else {
            set.push((lower, value.clone()));
        }
    }
    set.sort();

    set
}

/// Parse CIDRs (host bits are dropped: `10.1.2.3/8` means `10.0.0.0/8`), sorted and deduplicated.
pub(crate) fn cidrs(list: &[String], field: &str, report: &mut Report<'_>) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for (i, text) in list.iter().enumerate() {
        match text.parse::<IpNet>() {
            Ok(net) => nets.push(net.trunc()),
            Err(_) => report.error(
                format!("{field}[{i}]"),
                reasons::INVALID_CIDR,
                format!(
                    "`{text}` is not a CIDR; write it like 10.0.0.0/8, 203.0.113.7/32 or 2001:db8::/32"
                ),
            ),
        }
    }
    nets.sort();
    nets.dedup();
    nets
}
