//! Identify the caller: by the client certificate of a TLS connection (products with
//! `clientCertificates`), or by the product's key (header, or query parameter when configured),
//! hashed and looked up by digest, or by a verified token's subject.
//!
//! A certificate is looked up by the SHA-256 of its DER, computed once per connection; whether
//! its chain leads to the product's own CA is decided once per connection and product
//! ([`TlsConn::verified_for`]), so the request path does no signature verification.
//!
//! The key is only ever held as a borrowed slice of the request; the proxy stores and compares
//! SHA-256 digests, and the final comparison is constant-time so a lookup that hits does not
//! reveal, by timing, how much of a digest matched.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use http::header::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::jwt::verify::Verified;
use crate::message::query;
use crate::problem::Rejection;
use crate::runtime::{KeyDigest, PlanRt, ProductRt, Runtime, SubscriptionRt};
use crate::tls::TlsConn;

/// Who is calling.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'rt> {
    /// The product does not require a subscription.
    Anonymous,
    /// A subscription, with the plan it is on.
    Subscription(Subscribed<'rt>),
}

/// A subscription the caller was identified as, as found: later phases use it as is and never
/// look it up again.
#[derive(Debug, Clone, Copy)]
pub struct Subscribed<'rt> {
    /// Index into [`Runtime::subscriptions`] (what the access log and metrics name).
    pub index: u32,
    /// The subscription.
    pub subscription: &'rt SubscriptionRt,
    /// Its plan.
    pub plan: &'rt PlanRt,
}

impl Caller<'_> {
    /// The subscription's index, if the caller is one.
    #[cfg(test)]
    pub fn subscription_index(&self) -> Option<u32> {
        match self {
            Caller::Anonymous => None,
            Caller::Subscription(s) => Some(s.index),
        }
    }
}

impl<'rt> Subscribed<'rt> {
    /// The subscription at `index` of `rt`, with its plan; `None` when there is none.
    fn at(rt: &'rt Runtime, index: u32) -> Option<Subscribed<'rt>> {
        let subscription = rt.subscriptions.get(index as usize)?;
        Some(Subscribed {
            index,
            subscription,
            plan: rt.plan_of(subscription),
        })
    }
}

/// Identify the caller of `product` from the TLS connection's client certificate (if any), the
/// request's headers and raw query, and the bearer token already verified by the product's
/// `jwt` policies (if it has any).
///
/// - A product with `clientCertificates.required` refuses a call without a certificate that
///   verifies against its CA (401), whatever else is sent — even when it needs no subscription.
/// - A verified certificate listed by a subscription of the product identifies it.
/// - Otherwise a key wins when one is sent; without a key, a verified token identifies the
///   subscription that lists its `sub`, `azp` or `client_id` (in that order) in `jwtSubjects`.
/// - A verified certificate that no subscription lists, with no key or token, is refused (403).
/// - A replaced key kept by a rotation grace identifies its subscription while `now` (the
///   request's clock reading) is before its instant; after it, it is an unknown key (401).
pub fn identify<'rt>(
    rt: &'rt Runtime,
    product: &ProductRt,
    headers: &HeaderMap,
    raw_query: Option<&str>,
    token: Option<&Verified>,
    tls: Option<&TlsConn>,
    now: DateTime<Utc>,
) -> Result<Caller<'rt>, Rejection> {
    let certificate = match &product.client_auth {
        None => None,
        Some(auth) => match tls.and_then(|t| t.verified_for(auth)) {
            None if auth.required => return Err(Rejection::ClientCertificateRequired),
            verified => verified,
        },
    };
    if !product.subscription_required {
        return Ok(Caller::Anonymous);
    }
    if let Some(fp) = certificate {
        if let Some(caller) = product
            .cert_subscriptions
            .get(fp)
            .and_then(|&idx| Subscribed::at(rt, idx))
        {
            return Ok(Caller::Subscription(caller));
        }
    }
    let key = match (extract_key(product, headers, raw_query), token) {
        (Err(Rejection::MissingKey), Some(token)) => return by_subject(rt, product, token),
        (Err(Rejection::MissingKey), None) if certificate.is_some() => {
            return Err(Rejection::UnknownClientCertificate)
        }
        (key, _) => key?,
    };
    let digest: KeyDigest = Sha256::digest(&key).into();
    let Some((stored, idx)) = rt
        .subscription_by_digest(&digest)
        .or_else(|| rt.subscription_by_graced_digest(&digest, now))
    else {
        // A valid key of a subscription the provider's configuration took down: not the
        // caller's fault, so not a 401 telling them to check their key.
        if rt.key_unavailable(&digest) {
            return Err(Rejection::ApiMisconfigured);
        }
        return Err(Rejection::UnknownKey);
    };
    let found = Subscribed::at(rt, idx).ok_or(Rejection::UnknownKey)?;
    // The index found it by equality already; this constant-time check is what the decision
    // rests on, so no early-exit comparison decides whether a key is accepted.
    if bool::from(stored.ct_eq(&digest)) {
        Ok(Caller::Subscription(found))
    } else {
        Err(Rejection::UnknownKey)
    }
}

/// The subscription whose `jwtSubjects` lists the token's `sub`, `azp` or `client_id`.
fn by_subject<'rt>(
    rt: &'rt Runtime,
    product: &ProductRt,
    token: &Verified,
) -> Result<Caller<'rt>, Rejection> {
    [&token.sub, &token.azp, &token.client_id]
        .into_iter()
        .flatten()
        .find_map(|s| product.jwt_subjects.get(s.as_str()))
        .and_then(|&idx| Subscribed::at(rt, idx))
        .map(Caller::Subscription)
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
    use crate::runtime::Registry;
    use crate::tls::client_auth::test_certs::Ca;
    use http::HeaderValue;
    use tollgate_crds::table::*;

    fn table(query: Option<&str>, required: bool) -> RoutingTable {
        let (primary, secondary) = (key_digest("primary-key"), key_digest("secondary-key"));
        let mut t = crate::runtime::fixtures::one_subscription(&[&primary, &secondary]);
        t.products[0].subscription_required = required;
        t.products[0].key_location.query = query.map(str::to_string);
        t
    }

    fn run(
        query_name: Option<&str>,
        headers: &[(&str, &[u8])],
        q: Option<&str>,
    ) -> Result<Option<u32>, Rejection> {
        let rt = Runtime::build(&table(query_name, true), &Registry::default(), 1);
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_bytes(v).expect("value"),
            );
        }
        identify(&rt, &rt.products[0], &h, q, None, None, Utc::now())
            .map(|c| c.subscription_index())
    }

    #[test]
    fn a_key_of_a_subscription_left_out_by_the_provider_is_503_not_401() {
        let mut t = table(None, true);
        t.unavailable = vec![UnavailableEntry {
            id: "ns/broken".into(),
            // A served key listed as unavailable too keeps its subscription's answer.
            key_digests: vec![key_digest("left-out-key"), key_digest("primary-key")],
        }];
        let rt = Runtime::build(&t, &Registry::default(), 1);
        let call = |key: &'static [u8]| {
            let mut h = HeaderMap::new();
            h.insert(
                "x-subscription-key",
                HeaderValue::from_static(std::str::from_utf8(key).unwrap_or("")),
            );
            identify(&rt, &rt.products[0], &h, None, None, None, Utc::now())
                .map(|c| c.subscription_index())
        };
        assert_eq!(call(b"left-out-key"), Err(Rejection::ApiMisconfigured));
        assert_eq!(call(b"primary-key"), Ok(Some(0)));
        assert_eq!(call(b"nobody-has-this"), Err(Rejection::UnknownKey));
    }

    #[test]
    fn primary_and_secondary_keys_identify() {
        assert_eq!(
            run(None, &[("x-subscription-key", b"primary-key")], None),
            Ok(Some(0))
        );
        assert_eq!(
            run(None, &[("X-Subscription-Key", b"secondary-key")], None),
            Ok(Some(0))
        );
    }

    /// A runtime whose subscription also has the replaced key `old-key`, valid until `until`.
    fn graced_runtime(until: DateTime<Utc>) -> Runtime {
        let mut t = table(None, true);
        t.subscriptions[0].graced_keys = vec![GracedKey {
            digest: key_digest("old-key"),
            valid_until: until,
        }];
        Runtime::build(&t, &Registry::default(), 1)
    }

    #[test]
    fn a_graced_key_identifies_until_its_instant_then_is_unknown() {
        let until = DateTime::from_timestamp(1_800_000_090, 0).expect("instant");
        let rt = graced_runtime(until);
        let call = |key: &str, now: DateTime<Utc>| {
            let mut h = HeaderMap::new();
            h.insert("x-subscription-key", HeaderValue::from_str(key).expect("v"));
            identify(&rt, &rt.products[0], &h, None, None, None, now)
                .map(|c| c.subscription_index())
        };
        let second = chrono::Duration::seconds(1);
        let milli = chrono::Duration::milliseconds(1);
        assert_eq!(
            call("old-key", until - chrono::Duration::seconds(90)),
            Ok(Some(0))
        );
        assert_eq!(call("old-key", until - milli), Ok(Some(0)));
        assert_eq!(call("old-key", until), Err(Rejection::UnknownKey));
        assert_eq!(call("old-key", until + second), Err(Rejection::UnknownKey));
        // The current keys do not depend on the instant.
        assert_eq!(call("primary-key", until + second), Ok(Some(0)));
        // A graced digest that is some subscription's current key is that key, at any time.
        let mut t = table(None, true);
        t.subscriptions[0].graced_keys = vec![GracedKey {
            digest: key_digest("primary-key"),
            valid_until: until,
        }];
        let rt = Runtime::build(&t, &Registry::default(), 1);
        let mut h = HeaderMap::new();
        h.insert(
            "x-subscription-key",
            HeaderValue::from_static("primary-key"),
        );
        assert_eq!(
            identify(&rt, &rt.products[0], &h, None, None, None, until + second)
                .map(|c| c.subscription_index()),
            Ok(Some(0))
        );
    }

    #[test]
    fn a_malformed_graced_digest_is_refused_and_reported() {
        let mut t = table(None, true);
        t.subscriptions[0].graced_keys = vec![GracedKey {
            digest: "not-hex".into(),
            valid_until: Utc::now() + chrono::Duration::hours(1),
        }];
        let rt = Runtime::build(&t, &Registry::default(), 1);
        assert!(rt
            .diagnostics()
            .iter()
            .any(|d| d.to_string().contains("gracedKeys")));
        assert_eq!(
            run(None, &[("x-subscription-key", b"primary-key")], None),
            Ok(Some(0))
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
            Ok(Some(0))
        );
        assert_eq!(
            run(
                Some("subscription-key"),
                &[],
                Some("subscription-key=primary%2Dkey")
            ),
            Ok(Some(0))
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
        let rt = Runtime::build(&table(None, false), &Registry::default(), 1);
        assert_eq!(
            identify(
                &rt,
                &rt.products[0],
                &HeaderMap::new(),
                None,
                None,
                None,
                Utc::now()
            )
            .map(|c| c.subscription_index()),
            Ok(None)
        );
    }

    /// The test table with `clientCertificates` from `ca` on the product, and `listed`'s
    /// fingerprint on the subscription.
    fn cert_runtime(ca: &Ca, required: bool, sub_required: bool, listed: &[u8]) -> Runtime {
        let mut t = table(None, sub_required);
        t.products[0].client_certificates = Some(ClientCertificatesEntry {
            ca_pem: ca.pem(),
            required,
        });
        t.subscriptions[0].client_certificates = vec![hex::encode(Sha256::digest(listed))];
        Runtime::build(&t, &Registry::default(), 1)
    }

    fn with_cert(
        rt: &Runtime,
        conn: Option<&TlsConn>,
        key: Option<&str>,
    ) -> Result<Option<u32>, Rejection> {
        let mut h = HeaderMap::new();
        if let Some(k) = key {
            h.insert(
                "x-subscription-key",
                HeaderValue::from_str(k).expect("value"),
            );
        }
        identify(rt, &rt.products[0], &h, None, None, conn, Utc::now())
            .map(|c| c.subscription_index())
    }

    #[test]
    fn client_certificates_identify_and_are_required() {
        let ca = Ca::new("ca");
        let other = Ca::new("other");
        let (listed, _) = ca.client("listed", false);
        let (unlisted, _) = ca.client("unlisted", false);
        let (foreign, _) = other.client("foreign", false);
        let rt = cert_runtime(&ca, true, true, listed.der().as_ref());
        let conn = |c: &rcgen::Certificate| TlsConn::new(vec![c.der().clone()]);

        assert_eq!(with_cert(&rt, Some(&conn(&listed)), None), Ok(Some(0)));
        // Required: nothing, no TLS, or a chain from another CA is 401, keys or not.
        for c in [None, Some(TlsConn::new(vec![])), Some(conn(&foreign))] {
            assert_eq!(
                with_cert(&rt, c.as_ref(), Some("primary-key")),
                Err(Rejection::ClientCertificateRequired)
            );
        }
        // Verified but listed nowhere: 403 unless a key identifies the caller.
        assert_eq!(
            with_cert(&rt, Some(&conn(&unlisted)), None),
            Err(Rejection::UnknownClientCertificate)
        );
        assert_eq!(
            with_cert(&rt, Some(&conn(&unlisted)), Some("primary-key")),
            Ok(Some(0))
        );
    }

    #[test]
    fn optional_client_certificates_sit_next_to_keys() {
        let ca = Ca::new("ca");
        let other = Ca::new("other");
        let (listed, _) = ca.client("listed", false);
        let (foreign, _) = other.client("foreign", false);
        let rt = cert_runtime(&ca, false, true, listed.der().as_ref());
        let conn = |c: &rcgen::Certificate| TlsConn::new(vec![c.der().clone()]);
        assert_eq!(with_cert(&rt, Some(&conn(&listed)), None), Ok(Some(0)));
        assert_eq!(with_cert(&rt, None, Some("primary-key")), Ok(Some(0)));
        assert_eq!(with_cert(&rt, None, None), Err(Rejection::MissingKey));
        // A chain from another CA is no certificate for this product.
        assert_eq!(
            with_cert(&rt, Some(&conn(&foreign)), None),
            Err(Rejection::MissingKey)
        );
        // Required certificate on a product without subscriptions: checked, then anonymous.
        let open = cert_runtime(&ca, true, false, listed.der().as_ref());
        assert_eq!(
            with_cert(&open, Some(&conn(&foreign)), None),
            Err(Rejection::ClientCertificateRequired)
        );
        assert_eq!(with_cert(&open, Some(&conn(&listed)), None), Ok(None));
    }
}
