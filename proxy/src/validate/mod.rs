//! The validate phase (ApiPolicy `requestValidation`): allowed content types, a body size
//! limit counted while streaming, JSON structure limits checked while streaming, and an
//! optional JSON Schema, all before the backend sees a byte of a refused body.
//!
//! Every `requestValidation` of every policy attached to a product applies to the routes it
//! names (all routes when it names none), and a request must pass all of them: the route's
//! rules are merged at table load into one [`RouteValidation`] (smallest size limit, tightest
//! JSON limits field by field, every content-type list, every schema).
//!
//! A request without a body (no `Content-Length`, or `Content-Length: 0`, and not chunked) has
//! nothing to check and passes. A body-carrying request needs an allowed `Content-Type` when
//! the route lists any (a missing one is 415), and a route with JSON checks refuses a
//! `Content-Encoding` other than `identity` (415: untrusted bodies are not inflated).
//!
//! See [`body`] for the memory bound.

pub mod body;
pub mod content_type;
pub mod json_scan;
pub mod schema;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use prometheus::IntCounter;
use tollgate_crds::table::{RequestValidationEntry, DEFAULT_VALIDATED_BODY_BYTES};

use self::body::{BodyChecks, CountedBody, Overflow};
use self::content_type::MediaRange;
use self::json_scan::JsonLimits;
use self::schema::Schema;
use crate::problem::Rejection;

/// What is sent to a backend: the client's body as it streams in, or a body the gateway already
/// holds (request validation reads a bounded body before the backend may see a byte). The
/// stream is a [`CountedBody`]: counted against `maxBodyBytes` when only a size limit applies.
pub type ForwardBody = Either<CountedBody, Full<Bytes>>;

/// One `requestValidation` block, compiled once per table load (its schema too).
#[derive(Debug)]
pub struct ValidationRt {
    /// The ApiPolicy id (for notes).
    pub policy: String,
    /// Route names it applies to; empty means every route.
    pub routes: Vec<String>,
    /// Allowed media ranges; empty means any.
    pub content_types: Vec<MediaRange>,
    /// The ranges as one readable list, for the 415 detail.
    pub accepted: String,
    /// Largest body in bytes.
    pub max_body_bytes: Option<u64>,
    /// Structural JSON limits.
    pub json: Option<JsonLimits>,
    /// The compiled schema: `Some(Err(_))` when it did not compile (the routes then refuse
    /// bodies with 503 rather than pass them unchecked).
    pub schema: Option<Result<Arc<Schema>, String>>,
}

impl ValidationRt {
    /// Compile `entry` of policy `policy`; problems go to `notes` (each a sentence about the
    /// policy's `requestValidation`, which the caller names).
    pub fn build(policy: &str, entry: &RequestValidationEntry, notes: &mut Vec<String>) -> Self {
        let mut content_types = Vec::with_capacity(entry.content_types.len());
        for t in &entry.content_types {
            match MediaRange::parse(t) {
                Some(r) => content_types.push(r),
                None => notes.push(format!("content type {t:?} is not a media range; left out")),
            }
        }
        let accepted = content_types
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let schema = entry.json_schema.as_deref().map(|text| {
            Schema::compile(text).map(Arc::new).inspect_err(|e| {
                notes.push(format!(
                    "{e}; request bodies on its routes are refused (503)"
                ));
            })
        });
        ValidationRt {
            policy: policy.to_string(),
            routes: entry.routes.clone(),
            content_types,
            accepted,
            max_body_bytes: entry.max_body_bytes,
            json: entry.json.as_ref().map(JsonLimits::from),
            schema,
        }
    }

    /// Whether this block applies to the route named `route`.
    pub fn applies_to(&self, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|r| r == route)
    }
}

/// Every validation rule of one route, merged.
#[derive(Debug)]
pub struct RouteValidation {
    /// Content-type lists that must each match (with their readable form).
    content_types: Vec<(Vec<MediaRange>, String)>,
    /// The smallest `maxBodyBytes`.
    max_body_bytes: Option<u64>,
    /// Tightest JSON limits; `Some` whenever the body must be held and parsed.
    json: Option<JsonLimits>,
    /// Schemas the body must satisfy.
    schemas: Vec<Arc<Schema>>,
    /// A schema of this route did not compile: bodies are refused.
    broken: bool,
    /// How long a held body may take to arrive.
    body_timeout: Duration,
}

impl RouteValidation {
    /// Merge the `rules` that apply to route `route`; `None` when none does. `body_timeout`
    /// bounds reading a held body (the gateway uses the product's request timeout).
    pub fn for_route(
        rules: &[Arc<ValidationRt>],
        route: &str,
        body_timeout: Duration,
    ) -> Option<RouteValidation> {
        let mut merged = RouteValidation {
            content_types: Vec::new(),
            max_body_bytes: None,
            json: None,
            schemas: Vec::new(),
            broken: false,
            body_timeout,
        };
        let mut any = false;
        for rule in rules.iter().filter(|r| r.applies_to(route)) {
            any = true;
            if !rule.content_types.is_empty() {
                merged
                    .content_types
                    .push((rule.content_types.clone(), rule.accepted.clone()));
            }
            if let Some(max) = rule.max_body_bytes {
                merged.max_body_bytes = Some(merged.max_body_bytes.map_or(max, |m| m.min(max)));
            }
            let holds_body = rule.json.is_some() || rule.schema.is_some();
            if holds_body {
                let limits = rule.json.unwrap_or(JsonLimits::SYNTAX_ONLY);
                merged.json = Some(merged.json.map_or(limits, |m| m.min(limits)));
            }
            match &rule.schema {
                Some(Ok(s)) => merged.schemas.push(s.clone()),
                Some(Err(_)) => merged.broken = true,
                None => {}
            }
        }
        if let Some(json) = merged.json.as_mut() {
            // serde_json refuses deeper documents, and a schema parse must succeed.
            if !merged.schemas.is_empty() {
                json.max_depth = json.max_depth.min(JsonLimits::SYNTAX_ONLY.max_depth);
            }
        }
        any.then_some(merged)
    }

    /// Whether the body is held and checked as JSON.
    pub fn holds_body(&self) -> bool {
        self.json.is_some()
    }
}

/// After the validate phase: turns a failed backend exchange into 413 when the failure was
/// the body going over `maxBodyBytes` on its way through.
#[derive(Debug, Default)]
pub struct BodyGuard(Option<(Overflow, u64)>);

impl BodyGuard {
    /// `rejection`, or 413 when the streamed body went over its limit.
    pub fn explain(&self, rejection: Rejection) -> Rejection {
        match &self.0 {
            Some((overflow, limit)) if overflow.tripped() => {
                Rejection::BodyTooLarge { limit: *limit }
            }
            _ => rejection,
        }
    }
}

/// The validate phase: check the request against its route's rules and return the body to
/// forward (the client's stream, counted when limited; or the held, checked bytes).
///
/// `unreadable` counts a client body that breaks off (see [`CountedBody`]).
pub async fn check(
    rules: Option<&RouteValidation>,
    headers: &HeaderMap,
    body: Incoming,
    unreadable: IntCounter,
) -> Result<(ForwardBody, BodyGuard), Rejection> {
    let pass = |body, unreadable| {
        Ok((
            Either::Left(CountedBody::unlimited(body, unreadable)),
            BodyGuard::default(),
        ))
    };
    let Some(v) = rules else {
        return pass(body, unreadable);
    };
    // Nothing to check without a body (a GET, or `Content-Length: 0`).
    if body.is_end_stream() {
        return pass(body, unreadable);
    }
    if v.broken {
        return Err(Rejection::ValidationUnavailable);
    }
    for (allowed, accepted) in &v.content_types {
        if !content_type::allowed(headers, allowed) {
            return Err(Rejection::UnsupportedMediaType {
                accepted: accepted.clone(),
            });
        }
    }
    let declared = body::declared_length(headers);
    if let (Some(max), Some(len)) = (v.max_body_bytes, declared) {
        if len > max {
            return Err(Rejection::BodyTooLarge { limit: max });
        }
    }
    if let Some(limits) = v.json {
        if content_type::is_encoded(headers) {
            return Err(Rejection::EncodedBody);
        }
        let checks = BodyChecks {
            max_bytes: v.max_body_bytes.unwrap_or(DEFAULT_VALIDATED_BODY_BYTES),
            limits,
            schemas: &v.schemas,
            timeout: v.body_timeout,
        };
        let body = CountedBody::unlimited(body, unreadable);
        let bytes: Bytes = body::read_checked(body, declared, &checks).await?;
        return Ok((Either::Right(Full::new(bytes)), BodyGuard::default()));
    }
    if let Some(max) = v.max_body_bytes {
        let (body, overflow) = CountedBody::capped(body, max, unreadable);
        return Ok((Either::Left(body), BodyGuard(Some((overflow, max)))));
    }
    pass(body, unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_crds::table::JsonLimitsEntry;

    fn entry(routes: &[&str]) -> RequestValidationEntry {
        RequestValidationEntry {
            routes: routes.iter().map(|r| r.to_string()).collect(),
            ..RequestValidationEntry::default()
        }
    }

    #[test]
    fn rules_merge_to_the_tightest() {
        let mut notes = Vec::new();
        let a = RequestValidationEntry {
            content_types: vec!["application/json".into()],
            max_body_bytes: Some(1000),
            json: Some(JsonLimitsEntry {
                max_depth: 5,
                ..JsonLimitsEntry::default()
            }),
            ..entry(&[])
        };
        let b = RequestValidationEntry {
            content_types: vec!["application/*".into()],
            max_body_bytes: Some(500),
            json: Some(JsonLimitsEntry {
                max_depth: 9,
                max_array_length: 3,
                ..JsonLimitsEntry::default()
            }),
            ..entry(&["orders"])
        };
        let c = RequestValidationEntry {
            max_body_bytes: Some(10),
            ..entry(&["elsewhere"])
        };
        let rules: Vec<Arc<ValidationRt>> = [("ns/a", a), ("ns/b", b), ("ns/c", c)]
            .iter()
            .map(|(id, e)| Arc::new(ValidationRt::build(id, e, &mut notes)))
            .collect();
        assert!(notes.is_empty(), "{notes:?}");
        let t = Duration::from_secs(1);
        let orders = RouteValidation::for_route(&rules, "orders", t).expect("applies");
        assert_eq!(orders.max_body_bytes, Some(500));
        assert_eq!(orders.content_types.len(), 2);
        let json = orders.json.expect("json");
        assert_eq!((json.max_depth, json.max_array_length), (5, 3));
        let other = RouteValidation::for_route(&rules, "other", t).expect("a applies");
        assert_eq!(other.max_body_bytes, Some(1000));
        assert_eq!(other.content_types.len(), 1);
        let none: Vec<Arc<ValidationRt>> = rules[2..].to_vec();
        assert!(RouteValidation::for_route(&none, "orders", t).is_none());
    }

    #[test]
    fn a_schema_alone_holds_the_body_and_a_broken_one_fails_closed() {
        let mut notes = Vec::new();
        let ok = RequestValidationEntry {
            max_body_bytes: Some(100),
            json_schema: Some(r#"{"type": "object"}"#.into()),
            ..entry(&[])
        };
        let bad = RequestValidationEntry {
            max_body_bytes: Some(100),
            json_schema: Some(r#"{"type": 12}"#.into()),
            ..entry(&[])
        };
        let t = Duration::from_secs(1);
        let rules = vec![Arc::new(ValidationRt::build("ns/ok", &ok, &mut notes))];
        let v = RouteValidation::for_route(&rules, "r", t).expect("applies");
        assert!(v.holds_body() && !v.broken);
        assert_eq!(v.json, Some(JsonLimits::SYNTAX_ONLY));
        assert!(notes.is_empty());
        let rules = vec![Arc::new(ValidationRt::build("ns/bad", &bad, &mut notes))];
        let v = RouteValidation::for_route(&rules, "r", t).expect("applies");
        assert!(v.broken);
        assert!(
            notes.iter().any(|n| n.contains("refused (503)")),
            "{notes:?}"
        );
    }

    #[test]
    fn body_guard_explains_only_a_tripped_limit() {
        let g = BodyGuard::default();
        assert_eq!(
            g.explain(Rejection::BackendProtocol),
            Rejection::BackendProtocol
        );
        let overflow = Overflow::default();
        let g = BodyGuard(Some((overflow.clone(), 7)));
        assert_eq!(
            g.explain(Rejection::BackendProtocol),
            Rejection::BackendProtocol
        );
        overflow.trip();
        assert_eq!(
            g.explain(Rejection::BackendProtocol),
            Rejection::BodyTooLarge { limit: 7 }
        );
    }
}
