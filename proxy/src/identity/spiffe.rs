//! SPIFFE ids `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`: parsed and matched
//! as plain values so the allow-list decision is tested without TLS.

use std::fmt;

/// A workload identity: the trust domain, namespace and ServiceAccount of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a Kubernetes workload SPIFFE id; names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    /// Not the `spiffe` scheme.
    #[error("SPIFFE id {0:?}: must start with spiffe://")]
    Scheme(String),
    /// Empty or invalid trust domain.
    #[error("SPIFFE id {0:?}: trust domain must be non-empty lowercase letters, digits, '.', '-' or '_'")]
    TrustDomain(String),
    /// Not exactly `/ns/<namespace>/sa/<service-account>`.
    #[error("SPIFFE id {0:?}: path must be /ns/<namespace>/sa/<service-account>")]
    Path(String),
}

/// Path segments are DNS-1123 names in Kubernetes; anything else cannot be a real
/// namespace or ServiceAccount, so rejecting it early keeps look-alikes out of allow lists.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn valid_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
        })
}

impl SpiffeId {
    /// The id of a pod's ServiceAccount in `trust_domain`.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeError> {
        Self::parse(&format!(
            "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// Parses exactly `spiffe://<td>/ns/<ns>/sa/<sa>`: no query, fragment, port, user info,
    /// trailing slash or extra segments, because the id is compared as a whole and a lenient
    /// parse would let two spellings name one workload.
    pub fn parse(s: &str) -> Result<Self, SpiffeError> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeError::Scheme(s.to_owned()))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| SpiffeError::Path(s.to_owned()))?;
        if !valid_trust_domain(td) {
            return Err(SpiffeError::TrustDomain(s.to_owned()));
        }
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "sa", sa] if valid_segment(ns) && valid_segment(sa) => Ok(SpiffeId {
                trust_domain: td.to_owned(),
                namespace: (*ns).to_owned(),
                service_account: (*sa).to_owned(),
            }),
            _ => Err(SpiffeError::Path(s.to_owned())),
        }
    }

    /// Parses a comma-separated list (the `--allowed-identities` form); blanks around commas are ignored.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, SpiffeError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Self::parse)
            .collect()
    }

    /// The trust domain (`cluster.local` by default in Tollgate).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
    /// The pod's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    /// The pod's ServiceAccount.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// Whether a peer's URI SANs name an allowed identity. A SAN that is not a valid SPIFFE id is
/// ignored (certificates may carry other URIs); more than one SPIFFE id is refused, as the
/// SPIFFE X.509 profile allows exactly one and ambiguity must not widen access.
pub fn allowed<'a>(uri_sans: impl IntoIterator<Item = &'a str>, allow: &[SpiffeId]) -> bool {
    let mut ids = uri_sans
        .into_iter()
        .filter(|u| u.starts_with("spiffe://"))
        .map(SpiffeId::parse);
    match (ids.next(), ids.next()) {
        (Some(Ok(id)), None) => allow.contains(&id),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let s = "spiffe://cluster.local/ns/shop/sa/cart";
        let id = SpiffeId::parse(s).unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "cart");
        assert_eq!(id.to_string(), s);
        assert_eq!(SpiffeId::new("cluster.local", "shop", "cart").unwrap(), id);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local",
            "spiffe:///ns/a/sa/b",
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe://cluster.local:8443/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b/",
            "spiffe://cluster.local/ns/a/sa/b/c",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
            "spiffe://cluster.local/ns/A/sa/b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn list_parsing_trims_and_names_the_bad_entry() {
        let l = SpiffeId::parse_list(" spiffe://td/ns/a/sa/b , spiffe://td/ns/c/sa/d,").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            SpiffeId::parse_list("spiffe://td/ns/a/sa/b,nope"),
            Err(SpiffeError::Scheme("nope".into()))
        );
    }

    #[test]
    fn allow_list_matching() {
        let allow =
            SpiffeId::parse_list("spiffe://cluster.local/ns/tollgate-system/sa/tollgate-proxy")
                .unwrap();
        let ingress = "spiffe://cluster.local/ns/tollgate-system/sa/tollgate-proxy";
        assert!(allowed([ingress], &allow));
        assert!(allowed(["https://example.invalid/x", ingress], &allow));
        // Another SA, another trust domain, no id at all, two ids: all refused.
        assert!(!allowed(
            ["spiffe://cluster.local/ns/tollgate-system/sa/other"],
            &allow
        ));
        assert!(!allowed(
            ["spiffe://evil.local/ns/tollgate-system/sa/tollgate-proxy"],
            &allow
        ));
        assert!(!allowed(Vec::<&str>::new(), &allow));
        assert!(!allowed(
            [ingress, "spiffe://cluster.local/ns/a/sa/b"],
            &allow
        ));
        assert!(!allowed(
            ["spiffe://cluster.local/ns/tollgate-system/sa/tollgate-proxy/"],
            &allow
        ));
    }
}
