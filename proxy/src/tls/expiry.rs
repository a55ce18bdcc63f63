//! When a certificate stops being valid: the `notAfter` of an X.509 certificate, for the expiry
//! gauge. rustls and webpki check validity but do not expose it; the certificate is read with
//! `x509-parser` (as the SAN of a workload identity is). Anything unexpected gives `None` (the
//! certificate is then simply not on the gauge).

use x509_parser::prelude::{FromDer, X509Certificate};

/// The certificate's `notAfter` as Unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{date_time_ymd, CertificateParams, KeyPair};

    fn cert_expiring(year: i32, month: u8, day: u8) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["a.example".to_string()]).expect("params");
        params.not_after = date_time_ymd(year, month, day);
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn reads_not_after_in_both_time_forms() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050, as RFC 5280 says.
        assert_eq!(not_after(&cert_expiring(2030, 1, 2)), Some(1_893_542_400));
        assert_eq!(not_after(&cert_expiring(2051, 6, 1)), Some(2_569_190_400));
    }

    #[test]
    fn anything_else_is_none() {
        let der = cert_expiring(2030, 1, 2);
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(b"not a certificate"), None);
        assert_eq!(not_after(&der[..der.len() / 2]), None, "truncated");
    }
}
