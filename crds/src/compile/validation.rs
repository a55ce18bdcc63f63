//! `spec.requestValidation` → [`RequestValidationEntry`], with every default filled in.

use std::collections::BTreeSet;

use super::Report;
use crate::policy::RequestValidation;
use crate::reasons;
use crate::table::{JsonLimitsEntry, RequestValidationEntry, DEFAULT_VALIDATED_BODY_BYTES};

/// Largest body the gateway will hold for JSON checks (64 MiB).
pub const MAX_VALIDATED_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// Check and normalise a `requestValidation` block (errors go to `report`).
pub(crate) fn compile(
    v: &RequestValidation,
    user_routes: &BTreeSet<&str>,
    report: &mut Report<'_>,
) -> RequestValidationEntry {
    let field = "spec.requestValidation";
    let mut content_types = Vec::with_capacity(v.content_types.len());
    for (i, t) in v.content_types.iter().enumerate() {
        let lower = t.trim().to_ascii_lowercase();
        if is_media_range(&lower) {
            content_types.push(lower);
        } else {
            report.error(
                format!("{field}.contentTypes[{i}]"),
                reasons::INVALID_REQUEST_VALIDATION,
                format!("`{t}` is not a media type; write it like application/json or text/* (no parameters)"),
            );
        }
    }
    content_types.sort();
    content_types.dedup();

    for (k, route) in v.routes.iter().enumerate() {
        if !user_routes.contains(route.as_str()) {
            report.warning(
                format!("{field}.routes[{k}]"),
                reasons::UNKNOWN_ROUTE,
                format!(
                    "no product that uses this policy has a route named `{route}`, so this validation applies nowhere; check the name{}",
                    crate::compile::suggestion(route, user_routes.iter().copied())
                ),
            );
        }
    }
    let mut routes = v.routes.clone();
    routes.sort();
    routes.dedup();

    let json = v.json.as_ref().map(|j| {
        let d = JsonLimitsEntry::default();
        let mut limit = |value: Option<u32>, default: u32, name: &str| match value {
            Some(0) => {
                report.error(
                    format!("{field}.json.{name}"),
                    reasons::INVALID_REQUEST_VALIDATION,
                    format!("{name} must be at least 1, or omitted (default {default})"),
                );
                default
            }
            Some(n) => n,
            None => default,
        };
        JsonLimitsEntry {
            max_depth: limit(j.max_depth, d.max_depth, "maxDepth"),
            max_object_members: limit(
                j.max_object_members,
                d.max_object_members,
                "maxObjectMembers",
            ),
            max_array_length: limit(j.max_array_length, d.max_array_length, "maxArrayLength"),
            max_string_length: limit(j.max_string_length, d.max_string_length, "maxStringLength"),
        }
    });

    let json_schema = v.json_schema.as_ref().and_then(|text| {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(doc @ (serde_json::Value::Object(_) | serde_json::Value::Bool(_))) => {
                // The proxy compiles it with the same crate (no remote `$ref`s: no resolvers).
                match jsonschema::validator_for(&doc) {
                    Ok(_) => Some(text.clone()),
                    Err(e) => {
                        report.error(
                            format!("{field}.jsonSchema"),
                            reasons::INVALID_REQUEST_VALIDATION,
                            format!("jsonSchema is not a valid JSON Schema: {e}; only local `$ref`s (#/...) are resolved"),
                        );
                        None
                    }
                }
            }
            _ => {
                report.error(
                    format!("{field}.jsonSchema"),
                    reasons::INVALID_REQUEST_VALIDATION,
                    "jsonSchema must be a JSON Schema written as JSON text (an object such as {\"type\": \"object\"}); YAML is not accepted here",
                );
                None
            }
        }
    });

    let holds_body = json.is_some() || json_schema.is_some();
    let max_body_bytes = match v.max_body_bytes {
        Some(0) => {
            report.error(
                format!("{field}.maxBodyBytes"),
                reasons::INVALID_REQUEST_VALIDATION,
                "maxBodyBytes must be at least 1; to refuse bodies, limit the route's methods instead",
            );
            None
        }
        Some(n) if holds_body && n > MAX_VALIDATED_BODY_BYTES => {
            report.error(
                format!("{field}.maxBodyBytes"),
                reasons::INVALID_REQUEST_VALIDATION,
                format!(
                    "JSON bodies are held in memory until checked, so maxBodyBytes can be at most {MAX_VALIDATED_BODY_BYTES} with json or jsonSchema"
                ),
            );
            None
        }
        Some(n) => Some(n),
        None if holds_body => Some(DEFAULT_VALIDATED_BODY_BYTES),
        None => None,
    };

    RequestValidationEntry {
        routes,
        content_types,
        max_body_bytes,
        json,
        json_schema,
    }
}

/// `type/subtype` or `type/*`, RFC 9110 tokens, lowercase.
fn is_media_range(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match t.split_once('/') {
        Some((ty, sub)) => token(ty) && (sub == "*" || token(sub)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_media_range;

    #[test]
    fn media_ranges() {
        assert!(is_media_range("application/json"));
        assert!(is_media_range("application/merge-patch+json"));
        assert!(is_media_range("text/*"));
        assert!(!is_media_range("*/*x"));
        assert!(!is_media_range("application/json; charset=utf-8"));
        assert!(!is_media_range("json"));
    }
}
