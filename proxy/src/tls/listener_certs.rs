//! The certificates of Gateway HTTPS listeners, from the table
//! (`RoutingTable::listener_certificates`), chosen by SNI name as the Gateway API chooses a
//! listener: an exact hostname first, then the longest wildcard (`*.example.com` matches one
//! label, as it does for routes), then a listener without a hostname. A name none of them
//! matches falls through to `--tls-dir`'s certificates (see [`crate::tls::edge`]).
//!
//! Parsed once per table, so a handshake only looks a name up.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use tollgate_crds::table::ListenerCertificateEntry;

use crate::tls::cert_store::parse_pair;

/// Listener certificates by SNI name.
#[derive(Debug, Default)]
pub struct ListenerCerts {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".suffix", certificate)` for `*.suffix`, longest suffix first.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    any: Option<Arc<CertifiedKey>>,
    /// `(id, notAfter)` of each certificate, for the expiry gauge.
    expiry: Vec<(String, i64)>,
}

impl ListenerCerts {
    /// Parse `entries` (sorted by id, so of two listeners with one hostname the first id
    /// wins). An entry whose PEM does not parse or whose key does not match its certificate is
    /// left out and described in the returned problems (`(id, why)`); the compiler checked
    /// that both are PEM, not that they belong together.
    pub fn build(entries: &[ListenerCertificateEntry]) -> (ListenerCerts, Vec<(String, String)>) {
        let mut certs = ListenerCerts::default();
        let mut problems = Vec::new();
        for e in entries {
            let parsed = parse_pair(
                &e.id,
                e.cert_pem.as_bytes(),
                "tls.crt",
                e.key_pem.0.as_bytes(),
                "tls.key",
            );
            let served = match parsed {
                Ok(served) => served,
                Err(err) => {
                    problems.push((e.id.clone(), err.to_string()));
                    continue;
                }
            };
            if let Some(not_after) = served.not_after {
                certs.expiry.push((e.id.clone(), not_after));
            }
            let key = served.key;
            match e.hostname.as_deref().map(str::to_ascii_lowercase) {
                None => {
                    certs.any.get_or_insert(key);
                }
                Some(host) => match host.strip_prefix('*') {
                    Some(suffix) => {
                        if !certs.wildcard.iter().any(|(s, _)| s == suffix) {
                            certs.wildcard.push((suffix.to_string(), key));
                        }
                    }
                    None => {
                        certs.exact.entry(host).or_insert(key);
                    }
                },
            }
        }
        // Longest suffix first: the most specific wildcard wins. Stable, so ties keep id order.
        certs
            .wildcard
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        (certs, problems)
    }

    /// Whether the table holds no listener certificate.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.is_none()
    }

    /// The certificate for an SNI name (lowercase); `None` when no listener serves it.
    pub fn resolve(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        self.by_name(sni).or(self.any())
    }

    /// The certificate of the listener whose hostname matches `sni` (exactly, else by the
    /// longest wildcard).
    pub fn by_name(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        sni.and_then(|name| {
            self.exact.get(name).or_else(|| {
                self.wildcard
                    .iter()
                    .find(|(suffix, _)| {
                        name.len() > suffix.len()
                            && name.ends_with(suffix.as_str())
                            // One label: `*.example.com` does not match `a.b.example.com`.
                            && !name[..name.len() - suffix.len()].contains('.')
                    })
                    .map(|(_, key)| key)
            })
        })
    }

    /// The certificate of a listener without a hostname.
    pub fn any(&self) -> Option<&Arc<CertifiedKey>> {
        self.any.as_ref()
    }

    /// `(id, notAfter in Unix seconds)` of each certificate.
    pub fn expiry(&self) -> &[(String, i64)] {
        &self.expiry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::cert_store::test_server_certs::pair;
    use tollgate_crds::table::SecretPem;

    fn entry(id: &str, hostname: Option<&str>, sans: &[&str]) -> ListenerCertificateEntry {
        let (cert, key) = pair(sans);
        ListenerCertificateEntry {
            id: id.into(),
            hostname: hostname.map(Into::into),
            cert_pem: cert,
            key_pem: SecretPem(key),
        }
    }

    fn same(a: Option<&Arc<CertifiedKey>>, b: &ListenerCertificateEntry) -> bool {
        let want = rustls::pki_types::CertificateDer::pem_slice_iter(b.cert_pem.as_bytes())
            .next()
            .expect("pem")
            .expect("cert");
        a.is_some_and(|k| k.cert[0] == want)
    }

    use rustls::pki_types::pem::PemObject;

    #[test]
    fn exact_then_longest_wildcard_then_any() {
        let exact = entry("ns/gw/exact", Some("api.example.com"), &["api.example.com"]);
        let wide = entry("ns/gw/wide", Some("*.example.com"), &["*.example.com"]);
        let narrow = entry(
            "ns/gw/narrow",
            Some("*.eu.example.com"),
            &["*.eu.example.com"],
        );
        let any = entry("ns/gw/any", None, &["fallback.test"]);
        let entries = vec![any.clone(), exact.clone(), narrow.clone(), wide.clone()];
        let (certs, problems) = ListenerCerts::build(&entries);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(same(certs.resolve(Some("api.example.com")), &exact));
        assert!(same(certs.resolve(Some("www.example.com")), &wide));
        assert!(same(certs.resolve(Some("shop.eu.example.com")), &narrow));
        // One label only: `a.b.example.com` is not `*.example.com`'s.
        assert!(same(certs.resolve(Some("a.b.example.com")), &any));
        assert!(same(certs.resolve(Some("other.test")), &any));
        assert!(same(certs.resolve(None), &any));
        assert_eq!(certs.expiry().len(), 4);
    }

    #[test]
    fn without_an_any_listener_an_unknown_name_has_none() {
        let exact = entry("ns/gw/exact", Some("api.example.com"), &["api.example.com"]);
        let (certs, _) = ListenerCerts::build(&[exact]);
        assert!(certs.resolve(Some("other.test")).is_none());
        assert!(certs.resolve(None).is_none());
        assert!(!certs.is_empty());
        assert!(ListenerCerts::default().is_empty());
    }

    #[test]
    fn a_key_of_another_certificate_is_left_out_with_its_id() {
        let mut broken = entry("ns/gw/broken", Some("a.test"), &["a.test"]);
        broken.key_pem = entry("x/y/z", None, &["b.test"]).key_pem;
        let good = entry("ns/gw/good", Some("b.test"), &["b.test"]);
        let (certs, problems) = ListenerCerts::build(&[broken, good.clone()]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "ns/gw/broken");
        assert!(
            problems[0].1.contains("does not match"),
            "{}",
            problems[0].1
        );
        assert!(certs.resolve(Some("a.test")).is_none());
        assert!(same(certs.resolve(Some("b.test")), &good));
    }
}
