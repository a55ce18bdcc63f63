//! ApiPolicy → [`PolicyEntry`]: headers and IP filter; every other feature fails closed.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::syntax::{is_header_name, is_header_value};
use super::{Input, Outcomes, Rejected, Report};
use crate::diagnostics::Diagnostic;
use crate::policy::{ApiPolicy, HeaderOps};
use crate::reasons;
use crate::table::{HeaderOpsEntry, IpFilterEntry, PolicyEntry};

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
pub(crate) fn compile(
    inputs: &[Input<'_, ApiPolicy>],
    _rejected: &Rejected<'_>,
    out: &mut Vec<Diagnostic>,
) -> Outcomes<PolicyEntry> {
    let mut outcomes = Outcomes::default();
    for input in inputs {
        let mut report = Report::new(&input.object, out);
        let entry = compile_one(input, &mut report);
        let outcome = report.finish(entry);
        outcomes.insert(&input.object, outcome);
    }
    outcomes
}

fn compile_one(input: &Input<'_, ApiPolicy>, report: &mut Report<'_>) -> Option<PolicyEntry> {
    let spec = &input.value.spec;
    let object = &input.object;

    // Fail closed: a policy that asks for protection we do not enforce must not be attached to
    // anything, or its products would be served without that protection.
    let unsupported = [
        ("jwt", spec.jwt.is_some()),
        ("cors", spec.cors.is_some()),
        ("responseRewrite", !spec.response_rewrite.is_empty()),
        ("requestValidation", spec.request_validation.is_some()),
        ("backendTLS", spec.backend_tls.is_some()),
        ("anonymousRateLimit", spec.anonymous_rate_limit.is_some()),
    ];
    for (field, set) in unsupported {
        if set {
            report.error(
                format!("spec.{field}"),
                reasons::UNSUPPORTED,
                format!(
                    "{object} sets spec.{field}, which this version of Tollgate does not enforce yet; \
                     remove it (this version enforces headers and ipFilter). Products that use this \
                     policy are left out so nothing is served unprotected"
                ),
            );
        }
    }

    let headers = spec.headers.clone().unwrap_or_default();
    let request_headers = header_ops(headers.request.as_ref(), "spec.headers.request", report);
    let response_headers = header_ops(headers.response.as_ref(), "spec.headers.response", report);
    let ip_filter = spec.ip_filter.as_ref().map(|f| IpFilterEntry {
        allow: cidrs(&f.allow, "spec.ipFilter.allow", report),
        deny: cidrs(&f.deny, "spec.ipFilter.deny", report),
    });

    (!report.has_errors()).then(|| PolicyEntry {
        id: input.id(),
        request_headers,
        response_headers,
        ip_filter,
    })
}

/// Lowercase and check header names and values.
fn header_ops(ops: Option<&HeaderOps>, field: &str, report: &mut Report<'_>) -> HeaderOpsEntry {
    let Some(ops) = ops else {
        return HeaderOpsEntry::default();
    };
    let mut set: Vec<(String, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    // BTreeMap iteration is sorted, so which of two case-variants is reported is deterministic.
    for (name, value) in &ops.set {
        let at = format!("{field}.set.{name}");
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
                    "`{name}` is managed by the gateway and cannot be set by a policy; remove it"
                ),
            );
        } else if !seen.insert(lower.clone()) {
            report.error(
                at,
                reasons::INVALID_HEADER_NAME,
                format!(
                    "`{name}` is set twice (header names are case-insensitive); keep one of them"
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
    HeaderOpsEntry { set, remove }
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
