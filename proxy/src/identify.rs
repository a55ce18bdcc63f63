//! Identify the caller: read the product's key (header, or query parameter when configured),
//! hash it, and find the subscription by digest.
//!
//! The key is only ever held as a borrowed slice of the request; the proxy stores and compares
//! SHA-256 digests, and the final comparison is constant-time so a lookup that hits does not
//! reveal, by timing, how much of a digest matched.

use std::borrow::Cow;

use http::header::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::jwt::verify::Verified;
use crate::problem::Rejection;
use crate::query;
use crate::runtime::{KeyDigest, ProductRt, Runtime};

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The product does not require a subscription.
    Anonymous,
    /// A subscription, by index.
    Subscription(u32),
}

/// Identify the caller of `product` from the request's headers and raw query, and the bearer
/// token already verified by the product's `jwt` policies (if it has any).
///
/// A key wins when one is sent; without a key, a verified token identifies the subscription
/// that lists its `sub`, `azp` or `client_id` (in that order) in `jwtSubjects`.
pub fn identify(
    rt: &Runtime,
    product: &ProductRt,
    headers: &HeaderMap,
    raw_query: Option<&str>,
    token: Option<&Verified>,
) -> Result<Caller, Rejection> {
    if !product.subscription_required {
        return Ok(Caller::Anonymous);
    }
    let key = match (extract_key(product, headers, raw_query), token) {
        (Err(Rejection::MissingKey), Some(token)) => return by_subject(product, token),
        (key, _) => key?,
    };
    let digest: KeyDigest = Sha256::digest(&key).into();
    let idx = rt
        .subscription_by_digest(&digest)
        .ok_or(Rejection::UnknownKey)?;
    let sub = rt
        .subscriptions
        .get(idx as usize)
        .ok_or(Rejection::UnknownKey)?;
    // Compare against every stored digest without short-circuiting.
    let matched = sub
        .digests()
        .iter()
        .fold(subtle::Choice::from(0), |acc, d| acc | d.ct_eq(&digest));
    if bool::from(matched) {
        Ok(Caller::Subscription(idx))
    } else {
        Err(Rejection::UnknownKey)
    }
}

/// The subscription whose `jwtSubjects` lists the token's `sub`, `azp` or `client_id`.
fn by_subject(product: &ProductRt, token: &Verified) -> Result<Caller, Rejection> {
    [&token.sub, &token.azp, &token.client_id]
        .into_iter()
        .flatten()
        .find_map(|s| product.jwt_subjects.get(s.as_str()))
        .map(|&idx| Caller::Subscription(idx))
        .ok_or(Rejection::TokenNotSubscribed)
}

/// The key bytes from the product's header or query parameter (exactly one place, once).
pub fn extract_key<'a>(
    product: &ProductRt,
    headers: &'a HeaderMap,
    raw_query: Option<&'a str>,
) -> Result<Cow<'a, [u8]>, Rejection> {
    let from_header = match &product.key_header {
        Some(name) => {
            let mut values = headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => Some(v.as_bytes()),
                (None, _) => None,
                (Some(_), Some(_)) => return Err(Rejection::AmbiguousKey),
            }
        }
        None => None,
    };
    let from_query = match (&product.key_query, raw_query) {
        (Some(name), Some(q)) => {
            let mut values = query::values(q, name);
            match (values.next(), values.next()) {
                (Some(v), None) => Some(query::decode(v).ok_or(Rejection::InvalidKey)?),
                (None, _) => None,
                (Some(_), Some(_)) => return Err(Rejection::AmbiguousKey),
            }
        }
        _ => None,
    };
    let key: Cow<'a, [u8]> = match (from_header, from_query) {
        (Some(_), Some(_)) => return Err(Rejection::AmbiguousKey),
        (Some(h), None) => Cow::Borrowed(h),
        (None, Some(q)) => q,
        (None, None) => return Err(Rejection::MissingKey),
    };
    if key.is_empty() {
        return Err(Rejection::MissingKey);
    }
    if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Rejection::InvalidKey);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::ClientPool;
    use http::HeaderValue;
    use tollgate_crds::subscription::SubscriptionState;
    use tollgate_crds::table::*;

    fn table(query: Option<&str>, required: bool) -> RoutingTable {
        RoutingTable {
            products: vec![ProductEntry {
                id: "ns/p".into(),
                display_name: "p".into(),
                hostnames: vec![],
                subscription_required: required,
                key_location: KeyLookup {
                    header: Some("x-subscription-key".into()),
                    query: query.map(str::to_string),
                },
                backend: BackendTarget::Url {
                    url: "http://127.0.0.1:1".into(),
                },
                timeouts: TimeoutsMs::default(),
                policies: vec![],
                client_certificates: None,
                routes: vec![],
            }],
            plans: vec![PlanEntry {
                id: "ns/free".into(),
                product: "ns/p".into(),
                display_name: "Free".into(),
                routes: vec![],
                rate_limit: None,
                quota: None,
                scopes: vec![],
            }],
            subscriptions: vec![SubscriptionEntry {
                id: "ns/acme".into(),
                plan: "ns/free".into(),
                product: "ns/p".into(),
                state: SubscriptionState::Active,
                key_digests: vec![key_digest("primary-key"), key_digest("secondary-key")],
                expires_at: None,
                client_certificates: vec![],
                jwt_subjects: vec![],
                allowed_source_ranges: vec![],
            }],
            policies: vec![],
        }
    }

    fn run(
        query_name: Option<&str>,
        headers: &[(&str, &[u8])],
        q: Option<&str>,
    ) -> Result<Caller, Rejection> {
        let rt = Runtime::build(&table(query_name, true), None, &ClientPool::default(), 1);
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_bytes(v).expect("value"),
            );
        }
        identify(&rt, &rt.products[0], &h, q, None)
    }

    #[test]
    fn primary_and_secondary_keys_identify() {
        assert_eq!(
            run(None, &[("x-subscription-key", b"primary-key")], None),
            Ok(Caller::Subscription(0))
        );
        assert_eq!(
            run(None, &[("X-Subscription-Key", b"secondary-key")], None),
            Ok(Caller::Subscription(0))
        );
    }

    #[test]
    fn missing_unknown_and_malformed() {
        assert_eq!(run(None, &[], None), Err(Rejection::MissingKey));
        assert_eq!(
            run(None, &[("x-subscription-key", b"")], None),
            Err(Rejection::MissingKey)
        );
        assert_eq!(
            run(None, &[("x-subscription-key", b"nope")], None),
            Err(Rejection::UnknownKey)
        );
        assert_eq!(
            run(None, &[("x-subscription-key", b"k\xffk")], None),
            Err(Rejection::InvalidKey)
        );
        assert_eq!(
            run(None, &[("x-subscription-key", b"a b")], None),
            Err(Rejection::InvalidKey)
        );
        assert_eq!(
            run(
                None,
                &[
                    ("x-subscription-key", b"primary-key"),
                    ("x-subscription-key", b"primary-key")
                ],
                None
            ),
            Err(Rejection::AmbiguousKey)
        );
    }

    #[test]
    fn query_only_when_configured_and_never_both() {
        assert_eq!(
            run(None, &[], Some("subscription-key=primary-key")),
            Err(Rejection::MissingKey)
        );
        assert_eq!(
            run(
                Some("subscription-key"),
                &[],
                Some("a=1&subscription-key=primary-key")
            ),
            Ok(Caller::Subscription(0))
        );
        assert_eq!(
            run(
                Some("subscription-key"),
                &[],
                Some("subscription-key=primary%2Dkey")
            ),
            Ok(Caller::Subscription(0))
        );
        assert_eq!(
            run(
                Some("subscription-key"),
                &[("x-subscription-key", b"primary-key")],
                Some("subscription-key=primary-key")
            ),
            Err(Rejection::AmbiguousKey)
        );
        assert_eq!(
            run(
                Some("subscription-key"),
                &[],
                Some("subscription-key=a&subscription-key=b")
            ),
            Err(Rejection::AmbiguousKey)
        );
        assert_eq!(
            run(Some("subscription-key"), &[], Some("subscription-key=%zz")),
            Err(Rejection::InvalidKey)
        );
    }

    #[test]
    fn anonymous_when_not_required() {
        let rt = Runtime::build(&table(None, false), None, &ClientPool::default(), 1);
        assert_eq!(
            identify(&rt, &rt.products[0], &HeaderMap::new(), None, None),
            Ok(Caller::Anonymous)
        );
    }
}
