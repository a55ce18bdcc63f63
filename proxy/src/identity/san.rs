//! The URI SANs of an X.509 certificate.
//!
//! webpki verifies chains but exposes only DNS names, and a SPIFFE id is a URI SAN; the
//! certificate is read with `x509-parser` (the operator's CA uses it too). Anything unexpected
//! gives an empty list: the peer then has no identity and is refused (fail closed).

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Every URI SAN of the certificate `der`, in order; empty when there is none or the DER is not
/// a certificate (or has more than one subjectAltName extension, which RFC 5280 forbids).
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some((*uri).to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert(sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_uri_sans_among_other_names() {
        let der = cert(vec![
            SanType::DnsName("a.test".try_into().unwrap()),
            SanType::URI("spiffe://cluster.local/ns/a/sa/b".try_into().unwrap()),
            SanType::URI("https://example.invalid/x".try_into().unwrap()),
        ]);
        assert_eq!(
            uri_sans(&der),
            vec![
                "spiffe://cluster.local/ns/a/sa/b".to_string(),
                "https://example.invalid/x".to_string()
            ]
        );
    }

    #[test]
    fn no_san_or_garbage_is_empty() {
        assert!(uri_sans(&cert(vec![])).is_empty());
        assert!(uri_sans(&cert(vec![SanType::DnsName("a.test".try_into().unwrap())])).is_empty());
        assert!(uri_sans(b"").is_empty());
        assert!(uri_sans(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_empty());
        let der = cert(vec![SanType::URI(
            "spiffe://td/ns/a/sa/b".try_into().unwrap(),
        )]);
        assert_eq!(uri_sans(&der), vec!["spiffe://td/ns/a/sa/b".to_string()]);
        // Every truncation is refused (the outer length no longer fits), never a panic.
        for cut in 0..der.len() {
            assert!(uri_sans(&der[..cut]).is_empty(), "cut at {cut}");
        }
    }
}
