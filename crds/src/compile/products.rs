//! Product → [`ProductEntry`]: syntax, backend, policies, then route conflicts between products.

use std::collections::BTreeMap;

use super::secrets::Secrets;
use super::{object_id, Input, Lookup, Outcome, Outcomes, Rejected, Report};
use crate::diagnostics::Diagnostic;
use crate::durations::parse_timeout_ms;
use crate::gateway::attach::Attached;
use crate::gateway::ir::Binding;
use crate::product::{
    Backend, Method, PathMatch, Product, ProductSpec, Route, SidecarCallers, ValueMatch,
};
use crate::reasons;
use crate::secret_data::CA_CRT;
use crate::syntax::{
    is_header_name, is_header_value, is_hostname, is_query_name, is_route_name, path_problem,
};
use crate::table::{
    BackendTarget, ClientCertificatesEntry, GatewayBindingEntry, KeyLookup, PolicyEntry,
    ProductEntry, RouteEntry, TimeoutsMs,
};

/// CRD limits (`maxItems`/`maxLength`) re-checked here for standalone mode.
const MAX_HOSTNAMES: usize = 64;
const MAX_ROUTES: usize = 256;
const MAX_POLICIES: usize = 16;
const MAX_BASE_PATH: usize = 256;
const MAX_ROUTE_PATH: usize = 1024;

/// Compile every Product: each on its own first, then settle route conflicts oldest-first.
pub(crate) fn compile(
    inputs: &[Input<'_, Product>],
    policies: &Outcomes<PolicyEntry>,
    attachment: &BTreeMap<String, Vec<Attached>>,
    secrets: &Secrets<'_>,
    rejected: &Rejected<'_>,
    bindings: &BTreeMap<String, Vec<Binding>>,
    out: &mut Vec<Diagnostic>,
) -> Outcomes<ProductEntry> {
    let mut outcomes = Outcomes::default();
    let mut candidates = Vec::new();
    for input in inputs {
        let mut report = Report::new(&input.object, out);
        let attached = attachment
            .get(&input.id())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut entry = compile_one(input, attached, policies, secrets, rejected, &mut report);
        // Where on addressed Gateways it is served: known before conflicts are settled, since
        // routes on different Gateway ports never meet.
        if let (Some(entry), Some(bound)) = (entry.as_mut(), bindings.get(&input.id())) {
            entry.bindings = bound
                .iter()
                .map(|b| GatewayBindingEntry {
                    gateway: b.gateway.clone(),
                    port: b.port,
                    hostnames: b.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect(),
                })
                .collect();
        }
        match report.finish(entry) {
            Outcome::Compiled(entry) => candidates.push((input, entry)),
            failed => outcomes.insert(&input.object, failed),
        }
    }

    // Oldest first, so that adding a product can never take routes away from one already serving.
    // Stable: equal ages stay in (namespace, name) order.
    candidates.sort_by(|(a, _), (b, _)| a.age_key().cmp(&b.age_key()));
    let mut claims: BTreeMap<ClaimKey, Vec<Claim>> = BTreeMap::new();
    for (input, entry) in candidates {
        let mut report = Report::new(&input.object, out);
        let mine = claims_of(&entry);
        for (key, claim) in &mine {
            let holder = claims.get(key).and_then(|held| {
                held.iter()
                    .find(|c| methods_overlap(&c.methods, &claim.methods))
            });
            if let Some(holder) = holder {
                report.error(
                    format!("spec.routes[{}]", claim.route_index),
                    reasons::ROUTE_CONFLICT,
                    format!(
                        "route `{}` ({}) is already served by route `{}` of Product {}, which is older; \
                         change this product's hostnames, basePath, route path or methods, or remove one of the two",
                        claim.route,
                        describe(key, &claim.methods),
                        holder.route,
                        holder.product
                    ),
                );
            }
        }
        let failed = report.has_errors();
        let outcome = report.finish(Some(entry));
        if !failed {
            for (key, claim) in mine {
                claims.entry(key).or_default().push(claim);
            }
        }
        outcomes.insert(&input.object, outcome);
    }
    outcomes
}

/// (host or any, full path, exact?, header matches, query matches, addressed Gateway and port
/// or the proxies' own listeners) — what two routes must share to be able to collide (routes
/// that differ in their header or query matches are told apart by the proxy's ranking, and
/// routes on different sockets never meet, so they do not).
type ClaimKey = (
    Option<String>,
    String,
    bool,
    Vec<(String, String)>,
    Vec<(String, String)>,
    Scope,
);

/// An addressed Gateway and port, or `None`: the proxies' own listeners.
type Scope = Option<(String, u16)>;

/// One route's hold on a [`ClaimKey`].
struct Claim {
    product: String,
    route: String,
    route_index: usize,
    methods: Vec<Method>,
}

fn claims_of(entry: &ProductEntry) -> Vec<(ClaimKey, Claim)> {
    // Empty hostnames mean "any host": a claim of its own, which only other any-host routes share;
    // a specific hostname is more specific and wins in the proxy, so it is not a conflict.
    let any_or = |list: &[String]| -> Vec<Option<String>> {
        if list.is_empty() {
            vec![None]
        } else {
            list.iter().cloned().map(Some).collect()
        }
    };
    // Bound to addressed Gateways: served only there, per port, for that port's hosts.
    let hosts: Vec<(Scope, Option<String>)> = if entry.bindings.is_empty() {
        any_or(&entry.hostnames)
            .into_iter()
            .map(|h| (None, h))
            .collect()
    } else {
        entry
            .bindings
            .iter()
            .flat_map(|b| {
                any_or(&b.hostnames)
                    .into_iter()
                    .map(move |h| (Some((b.gateway.clone(), b.port)), h))
            })
            .collect()
    };
    let mut claims = Vec::new();
    for (route_index, route) in entry.routes.iter().enumerate() {
        for (scope, host) in &hosts {
            claims.push((
                (
                    host.clone(),
                    route.path.clone(),
                    route.path_match == PathMatch::Exact,
                    pairs(&route.headers),
                    pairs(&route.query_params),
                    scope.clone(),
                ),
                Claim {
                    product: entry.id.clone(),
                    route: route.name.clone(),
                    route_index,
                    methods: route.methods.clone(),
                },
            ));
        }
    }
    claims
}

fn pairs(matches: &[ValueMatch]) -> Vec<(String, String)> {
    matches
        .iter()
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect()
}

/// Empty means every method, so it overlaps with anything.
fn methods_overlap(a: &[Method], b: &[Method]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|m| b.contains(m))
}

fn describe((host, path, exact, headers, query, scope): &ClaimKey, methods: &[Method]) -> String {
    let methods = if methods.is_empty() {
        "any method".to_string()
    } else {
        methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join("|")
    };
    let host = host.as_deref().unwrap_or("any host");
    let kind = if *exact { "exactly" } else { "prefix" };
    let mut out = format!("{methods} {path} ({kind}) on {host}");
    if let Some((gateway, port)) = scope {
        out.push_str(&format!(" at Gateway {gateway} port {port}"));
    }
    for (what, list) in [("header", headers), ("query", query)] {
        for (name, value) in list {
            out.push_str(&format!(" with {what} {name}={value}"));
        }
    }
    out
}

/// One policy a Product uses: listed in its `spec.policies`, or attached by the policy's
/// `targetRefs` (`via`).
struct Source<'a> {
    field: String,
    namespace: &'a str,
    name: &'a str,
    via: Option<&'a str>,
}

/// How messages name policy `id`: the header filters of an HTTPRoute rule are a policy of the
/// rule's implicit Product (`HTTPRoute:<route>:<rule>`), and a BackendTLSPolicy one named
/// `BackendTLSPolicy:<namespace>:<name>`, which no one wrote as such.
fn policy_label(id: &str) -> String {
    let name = id.split_once('/').map_or(id, |(_, n)| n);
    if let Some(policy) = name.strip_prefix(crate::gateway::targets::BACKEND_TLS_PREFIX) {
        return format!("BackendTLSPolicy {}", policy.replacen(':', "/", 1));
    }
    match name
        .strip_prefix(crate::gateway::targets::IMPLICIT_PRODUCT_PREFIX)
        .and_then(|rest| rest.rsplit_once(':'))
    {
        Some((route, rule)) => format!("the header filters of HTTPRoute {route} (rule {rule})"),
        None => format!("ApiPolicy {id}"),
    }
}

/// What an attached policy decides alone, by the name messages use: the first policy in a
/// Product's order that sets it wins (the proxy applies the same rule).
fn decided_features(policy: &PolicyEntry) -> Vec<String> {
    let mut out = Vec::new();
    if policy.cors.is_some() {
        out.push("cors".to_string());
    }
    if policy.backend_tls.is_some() {
        out.push("backendTLS".to_string());
    }
    if policy.anonymous_rate_limit.is_some() {
        out.push("anonymousRateLimit".to_string());
    }
    for (side, ops) in [
        ("request", &policy.request_headers),
        ("response", &policy.response_headers),
    ] {
        out.extend(
            ops.set
                .iter()
                .map(|(name, _)| format!("the {side} header {name}")),
        );
    }
    out
}

fn compile_one(
    input: &Input<'_, Product>,
    attached: &[Attached],
    policies: &Outcomes<PolicyEntry>,
    secrets: &Secrets<'_>,
    rejected: &Rejected<'_>,
    report: &mut Report<'_>,
) -> Option<ProductEntry> {
    let spec = &input.value.spec;
    let namespace = &input.object.namespace;

    let hostnames = hostnames(&spec.hostnames, report);
    let base = base_path(spec.base_path.as_deref(), report);
    // A product with targetRefs reaches here with the backend its HTTPRoutes resolved to
    // (`gateway::targets`); one with neither is incomplete, except the implicit Product of an
    // HTTPRoute rule whose backend a Product cannot say: nothing to send to (500, the Gateway
    // API's rule) until `compile` sets the one `targets::resolve` found.
    let implicit = input
        .object
        .name
        .starts_with(crate::gateway::targets::IMPLICIT_PRODUCT_PREFIX);
    let backend = match &spec.backend {
        Some(b) => backend(b, namespace, report),
        None if implicit => Some(BackendTarget::Unresolved),
        None => {
            report.error(
                "spec.backend",
                reasons::INVALID_BACKEND,
                "set backend (a Service or a URL) with routes, or targetRefs to HTTPRoutes instead",
            );
            None
        }
    };

    let mut key_location = KeyLookup {
        header: None,
        query: None,
    };
    if spec.key_location.header.is_none() && spec.key_location.query.is_none() {
        report.error(
            "spec.keyLocation",
            reasons::INVALID_KEY_LOCATION,
            "set keyLocation.header (e.g. X-Subscription-Key), keyLocation.query, or both; \
             or omit keyLocation for the default header",
        );
    }
    if let Some(header) = &spec.key_location.header {
        if is_header_name(header) {
            key_location.header = Some(header.to_ascii_lowercase());
        } else {
            report.error(
                "spec.keyLocation.header",
                reasons::INVALID_KEY_LOCATION,
                format!("`{header}` is not a valid HTTP header name; use e.g. X-Subscription-Key"),
            );
        }
    }
    if let Some(query) = &spec.key_location.query {
        if is_query_name(query) {
            key_location.query = Some(query.clone());
        } else {
            report.error(
                "spec.keyLocation.query",
                reasons::INVALID_KEY_LOCATION,
                format!("`{query}` is not a plain query parameter name; use letters, digits, '.', '_', '~' and '-'"),
            );
        }
    }

    if spec.sidecar_callers == SidecarCallers::FullPipeline {
        sidecar_callers_unserved(spec, report);
    }

    let mut timeouts = TimeoutsMs::default();
    if let Some(t) = &spec.timeouts {
        if let Some(ms) = timeout(t.connect.as_deref(), "spec.timeouts.connect", report) {
            timeouts.connect_ms = ms;
        }
        if let Some(ms) = timeout(t.request.as_deref(), "spec.timeouts.request", report) {
            timeouts.request_ms = ms;
        }
    }

    // Routes made from HTTPRoute rules (a targeting Product, or the implicit Product of an
    // untargeted rule) repeat the rule's name once per match: one name, so Plans and scopes
    // naming the rule cover all of its matches.
    let from_rules = !spec.target_refs.is_empty() || implicit;
    let routes = routes(&spec.routes, &base, from_rules, report);
    let client_certificates = spec.client_certificates.as_ref().and_then(|c| {
        let ca_pem = secrets.certificates(
            namespace,
            &c.ca_secret,
            CA_CRT,
            "spec.clientCertificates.caSecret",
            "the CA certificates that sign callers' client certificates",
            report,
        )?;
        Some(ClientCertificatesEntry {
            ca_pem,
            required: c.required,
        })
    });

    if spec.policies.len() > MAX_POLICIES {
        report.error(
            "spec.policies",
            reasons::INVALID_FIELD,
            format!("at most {MAX_POLICIES} policies can be attached; merge some of them"),
        );
    }
    // Its own policies, then those attached through their targetRefs (in the merge rule's
    // order, see `gateway::attach`).
    let sources = spec
        .policies
        .iter()
        .enumerate()
        .map(|(i, name)| Source {
            field: format!("spec.policies[{i}]"),
            namespace: namespace.as_str(),
            name: name.as_str(),
            via: None,
        })
        .chain(attached.iter().map(|a| Source {
            field: "spec".to_string(),
            namespace: a.namespace.as_str(),
            name: a.name.as_str(),
            via: Some(a.via.as_str()),
        }));
    let mut policy_ids: Vec<String> = Vec::new();
    // What only one policy can decide: the first wins, later ones get a warning.
    let mut decided: BTreeMap<String, String> = BTreeMap::new();
    let mut tls_from: Option<String> = None;
    for source in sources {
        let Source {
            field,
            namespace: policy_ns,
            name,
            via,
        } = source;
        let id = object_id(policy_ns, name);
        // How the message names the policy's attachment.
        let how = match via {
            None => policy_label(&id),
            Some(via) => format!("ApiPolicy {id}, attached by its {via},"),
        };
        let left_out =
            "Until then this product is left out so nothing is served without its policies";
        match policies.lookup(policy_ns, name) {
            Lookup::Ready(policy) => {
                if policy_ids.contains(&id) {
                    continue;
                }
                for feature in decided_features(policy) {
                    match decided.get(&feature) {
                        Some(first) => report.warning(
                            field.clone(),
                            reasons::POLICY_OVERRIDDEN,
                            format!(
                                "{how} sets {feature}, but {}, {}, sets it too and wins; \
                                 remove {feature} from one of them",
                                policy_label(first),
                                // Own policies come first, so a listed one follows a listed one.
                                if via.is_none() {
                                    "listed earlier"
                                } else {
                                    "earlier in the order policies apply"
                                }
                            ),
                        ),
                        None => {
                            decided.insert(feature, id.clone());
                        }
                    }
                }
                if policy.backend_tls.is_some() && tls_from.is_none() {
                    tls_from = Some(id.clone());
                }
                policy_ids.push(id);
            }
            Lookup::NotReady(reason) => report.error(
                field,
                reasons::POLICY_NOT_READY,
                format!(
                    "{how} did not compile ({reason}); fix it (see its own diagnostics). {left_out}"
                ),
            ),
            Lookup::NotFound if rejected.contains("ApiPolicy", policy_ns, name) => report.error(
                field,
                reasons::POLICY_NOT_READY,
                format!("{how} could not be read; fix the error reported for it. {left_out}"),
            ),
            Lookup::NotFound => report.error(
                field,
                reasons::POLICY_NOT_FOUND,
                format!(
                    "ApiPolicy {id} does not exist{}; create it in namespace {policy_ns} or remove it \
                     from spec.policies. {left_out}",
                    super::suggestion(name, policies.names_in(policy_ns))
                ),
            ),
        }
    }
    if let (Some(policy), Some(BackendTarget::Url { url })) = (&tls_from, &backend) {
        if url.starts_with("http://") {
            report.error(
                "spec.backend.url",
                reasons::INVALID_BACKEND,
                format!(
                    "ApiPolicy {policy} sets backendTLS, but the backend URL is plain http://; \
                     write https:// (the gateway never sends a TLS-protected backend's traffic in the clear)"
                ),
            );
        }
    }

    if report.has_errors() {
        return None;
    }
    Some(ProductEntry {
        id: input.id(),
        display_name: spec
            .display_name
            .clone()
            .unwrap_or_else(|| input.object.name.clone()),
        hostnames,
        subscription_required: spec.subscription_required,
        key_location,
        backend: backend?,
        timeouts,
        policies: policy_ids,
        routes,
        client_certificates,
        headers_with_underscores: spec.headers_with_underscores,
        http_route: from_rules,
        host_rewrite: None,
        bindings: Vec::new(),
        sidecar_full_pipeline: spec.sidecar_callers == SidecarCallers::FullPipeline,
    })
}

/// Why `sidecarCallers: FullPipeline` cannot take effect, if it cannot (warnings: the product
/// still serves through the gateway, and its sidecars refuse direct callers as by default).
fn sidecar_callers_unserved(spec: &ProductSpec, report: &mut Report<'_>) {
    if spec.backend.as_ref().is_some_and(|b| b.url.is_some()) {
        report.warning(
            "spec.sidecarCallers",
            reasons::SIDECAR_CALLERS_UNSERVED,
            "FullPipeline has no effect with `backend.url`: only pods behind a `backend.service` \
             have sidecars; use a Service backend or leave sidecarCallers out",
        );
    }
    if spec
        .client_certificates
        .as_ref()
        .is_some_and(|c| c.required)
    {
        report.warning(
            "spec.sidecarCallers",
            reasons::SIDECAR_CALLERS_UNSERVED,
            "FullPipeline cannot be served with `clientCertificates.required`: a sidecar checks \
             workload identities, not this product's CA, so its direct callers stay refused; \
             set required: false (keys or tokens then identify them) or leave sidecarCallers out",
        );
    }
}

fn hostnames(list: &[String], report: &mut Report<'_>) -> Vec<String> {
    if list.len() > MAX_HOSTNAMES {
        report.error(
            "spec.hostnames",
            reasons::INVALID_HOSTNAME,
            format!("at most {MAX_HOSTNAMES} hostnames are allowed; split the product"),
        );
    }
    let mut hosts = Vec::new();
    for (i, host) in list.iter().enumerate() {
        // Hostnames are case-insensitive; lowercase so the proxy compares bytes.
        let lower = host.to_ascii_lowercase();
        if is_hostname(&lower) {
            hosts.push(lower);
        } else {
            report.error(
                format!("spec.hostnames[{i}]"),
                reasons::INVALID_HOSTNAME,
                format!(
                    "`{host}` is not a DNS hostname; use a name like api.example.com (optionally \
                     starting with '*.'), without scheme, port or path"
                ),
            );
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The basePath without a trailing slash; `/` and none both mean "no prefix" (empty string).
fn base_path(base: Option<&str>, report: &mut Report<'_>) -> String {
    let Some(base) = base else {
        return String::new();
    };
    if let Some(problem) = path_problem(base, MAX_BASE_PATH) {
        report.error(
            "spec.basePath",
            reasons::INVALID_PATH,
            format!("basePath {problem}; write it like /weather"),
        );
        return String::new();
    }
    base.trim_end_matches('/').to_string()
}

/// `base` (no trailing slash, maybe empty) + `path` (starts with `/`), never `//`, no trailing `/`.
pub(crate) fn join_path(base: &str, path: &str) -> String {
    let path = path.trim_end_matches('/');
    match (base.is_empty(), path.is_empty()) {
        (true, true) => "/".to_string(),
        (true, false) => path.to_string(),
        (false, _) => format!("{base}{path}"),
    }
}

fn backend(backend: &Backend, namespace: &str, report: &mut Report<'_>) -> Option<BackendTarget> {
    match (&backend.service, &backend.url) {
        (Some(_), Some(_)) | (None, None) => {
            report.error(
                "spec.backend",
                reasons::INVALID_BACKEND,
                "set exactly one of backend.service (a Service in the cluster) or backend.url \
                 (e.g. http://127.0.0.1:9000, for standalone mode or external backends)",
            );
            None
        }
        (None, Some(url)) => match normalize_url(url) {
            Ok(url) => Some(BackendTarget::Url { url }),
            Err(problem) => {
                report.error(
                    "spec.backend.url",
                    reasons::INVALID_BACKEND,
                    format!("`{url}` {problem}; write it like http://127.0.0.1:9000 or https://api.internal/v1"),
                );
                None
            }
        },
        (Some(service), None) => {
            let mut ok = true;
            if !is_hostname(&service.name) || service.name.contains('.') || service.name.len() > 63
            {
                report.error(
                    "spec.backend.service.name",
                    reasons::INVALID_BACKEND,
                    format!(
                        "`{}` is not a Service name; use the name of a Service in namespace {namespace} \
                         (lowercase letters, digits and '-')",
                        service.name
                    ),
                );
                ok = false;
            }
            if service.port == 0 {
                report.error(
                    "spec.backend.service.port",
                    reasons::INVALID_BACKEND,
                    "port must be between 1 and 65535",
                );
                ok = false;
            }
            ok.then(|| BackendTarget::Service {
                namespace: namespace.to_string(),
                name: service.name.clone(),
                port: service.port,
                endpoints: Vec::new(),
                workload: None,
            })
        }
    }
}

/// Check a backend URL (CEL `^https?://[^/?#]+(/[^?#]*)?$`, plus what a client needs to connect
/// safely) and strip trailing slashes so the proxy can append the request path.
pub(crate) fn normalize_url(url: &str) -> Result<String, &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    if url.contains(['?', '#']) {
        return Err("must not contain a query or fragment");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err("has no host");
    }
    // Credentials in a URL end up in logs and error messages.
    if authority.contains('@') {
        return Err("must not contain a user name or password");
    }
    let port = if let Some(v6) = authority.strip_prefix('[') {
        let (_, after) = v6
            .split_once(']')
            .ok_or("has an unclosed '[' in its host")?;
        if after.is_empty() {
            None
        } else {
            Some(
                after
                    .strip_prefix(':')
                    .ok_or("has text after its IPv6 address")?,
            )
        }
    } else {
        match authority.rsplit_once(':') {
            Some(("", _)) => return Err("has no host"),
            Some((_, port)) => Some(port),
            None => None,
        }
    };
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid {
            return Err("has an invalid port (use 1-65535)");
        }
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn timeout(text: Option<&str>, field: &str, report: &mut Report<'_>) -> Option<u64> {
    let text = text?;
    let ms = parse_timeout_ms(text);
    if ms.is_none() {
        report.error(
            field,
            reasons::INVALID_TIMEOUT,
            format!("`{text}` is not a duration; write it like 250ms, 5s or 1m"),
        );
    }
    ms
}

fn routes(
    list: &[Route],
    base: &str,
    from_rules: bool,
    report: &mut Report<'_>,
) -> Vec<RouteEntry> {
    if list.is_empty() {
        report.error(
            "spec.routes",
            reasons::INVALID_ROUTE,
            "a product needs at least one route; add e.g. {name: all, path: /}",
        );
    }
    if list.len() > MAX_ROUTES {
        report.error(
            "spec.routes",
            reasons::INVALID_ROUTE,
            format!("at most {MAX_ROUTES} routes are allowed; split the product"),
        );
    }
    let mut entries: Vec<RouteEntry> = Vec::new();
    for (i, route) in list.iter().enumerate() {
        let at = |f: &str| format!("spec.routes[{i}].{f}");
        if !is_route_name(&route.name) {
            report.error(
                at("name"),
                reasons::INVALID_ROUTE,
                format!(
                    "`{}` is not a valid route name; use lowercase letters, digits and '-' (at most 63), e.g. forecast-week",
                    route.name
                ),
            );
        }
        let repeated = list[..i].iter().position(|r| r.name == route.name);
        if let Some(first) = repeated.filter(|_| !from_rules) {
            report.error(
                at("name"),
                reasons::DUPLICATE_ROUTE_NAME,
                format!(
                    "route name `{}` is already used by spec.routes[{first}]; route names must be unique within a product",
                    route.name
                ),
            );
        }
        if let Some(problem) = path_problem(&route.path, MAX_ROUTE_PATH) {
            report.error(
                at("path"),
                reasons::INVALID_PATH,
                format!("path {problem}; write it like /forecast/week"),
            );
        }
        for (j, method) in route.methods.iter().enumerate() {
            if route.methods[..j].contains(method) {
                report.error(
                    format!("spec.routes[{i}].methods[{j}]"),
                    reasons::DUPLICATE_METHOD,
                    format!("{} is listed twice; list each method once", method.as_str()),
                );
            }
        }
        if route.rewrite_full_path && route.rewrite.is_none() {
            report.error(
                at("rewriteFullPath"),
                reasons::INVALID_ROUTE,
                "rewriteFullPath needs rewrite (the path to send instead); set rewrite or remove rewriteFullPath",
            );
        }
        if let Some(rewrite) = &route.rewrite {
            if !rewrite.starts_with('/') {
                report.error(
                    at("rewrite"),
                    reasons::INVALID_PATH,
                    format!("rewrite `{rewrite}` must start with '/'"),
                );
            }
        }
        let mut methods = route.methods.clone();
        methods.sort();
        methods.dedup();
        let headers = value_matches(&route.headers, &at("headers"), true, report);
        let query_params = value_matches(&route.query_params, &at("queryParams"), false, report);
        let entry = RouteEntry {
            name: route.name.clone(),
            path: join_path(base, &route.path),
            path_match: route.path_match,
            methods,
            rewrite: route.rewrite.clone(),
            rewrite_full_path: route.rewrite_full_path,
            headers,
            query_params,
        };
        // Within one product the proxy could only pick one of two identical matches at random.
        if let Some((j, other)) = entries.iter().enumerate().find(|(_, o)| {
            o.path == entry.path
                && o.path_match == entry.path_match
                && methods_overlap(&o.methods, &entry.methods)
                && o.headers == entry.headers
                && o.query_params == entry.query_params
        }) {
            report.error(
                format!("spec.routes[{i}]"),
                reasons::ROUTE_CONFLICT,
                format!(
                    "routes `{}` (spec.routes[{j}]) and `{}` match the same path {} and methods; \
                     give them different paths or methods, or merge them",
                    other.name, entry.name, entry.path
                ),
            );
        }
        entries.push(entry);
    }
    entries
}

/// A route's header (`header` true: names lowercased) or query matches, checked and sorted so
/// the table does not change when the manifest merely reorders them.
fn value_matches(
    matches: &[ValueMatch],
    field: &str,
    header: bool,
    report: &mut Report<'_>,
) -> Vec<ValueMatch> {
    let mut out: Vec<ValueMatch> = Vec::with_capacity(matches.len());
    for (k, m) in matches.iter().enumerate() {
        let at = format!("{field}[{k}]");
        let (valid_name, reason, what) = if header {
            (
                is_header_name(&m.name),
                reasons::INVALID_HEADER_NAME,
                "a valid HTTP header name; use letters, digits and -",
            )
        } else {
            (
                is_query_name(&m.name),
                reasons::INVALID_ROUTE,
                "a valid query parameter name; use letters, digits and ._~-",
            )
        };
        let name = if header {
            m.name.to_ascii_lowercase()
        } else {
            m.name.clone()
        };
        if !valid_name {
            report.error(
                format!("{at}.name"),
                reason,
                format!("`{}` is not {what}", m.name),
            );
        } else if !is_header_value(&m.value) {
            report.error(
                format!("{at}.value"),
                reasons::INVALID_HEADER_VALUE,
                "the value contains control characters (such as a line break); remove them",
            );
        } else if out.iter().any(|o| o.name == name) {
            report.error(
                format!("{at}.name"),
                reasons::INVALID_ROUTE,
                format!("`{}` is matched twice; match each name once", m.name),
            );
        } else {
            out.push(ValueMatch {
                name,
                value: m.value.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.value.cmp(&b.value)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_paths_without_double_slashes() {
        assert_eq!(join_path("/weather", "/current"), "/weather/current");
        assert_eq!(join_path("", "/current"), "/current");
        assert_eq!(join_path("/weather", "/"), "/weather");
        assert_eq!(join_path("", "/"), "/");
        assert_eq!(join_path("/weather", "/current/"), "/weather/current");
    }

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("http://127.0.0.1:9000/").as_deref(),
            Ok("http://127.0.0.1:9000")
        );
        assert_eq!(
            normalize_url("https://api.internal/v1/").as_deref(),
            Ok("https://api.internal/v1")
        );
        assert_eq!(
            normalize_url("http://[::1]:8080").as_deref(),
            Ok("http://[::1]:8080")
        );
        for bad in [
            "ftp://x",
            "127.0.0.1:9000",
            "http://",
            "http:///path",
            "http://x/?a=1",
            "http://x#f",
            "http://user:pw@x",
            "http://x:0",
            "http://x:99999",
            "http://x:",
            "http://x y",
            "http://[::1",
            "http://:80",
        ] {
            assert!(normalize_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn method_overlap() {
        assert!(methods_overlap(&[], &[Method::Get]));
        assert!(methods_overlap(
            &[Method::Get, Method::Post],
            &[Method::Post]
        ));
        assert!(!methods_overlap(&[Method::Get], &[Method::Post]));
    }
}
