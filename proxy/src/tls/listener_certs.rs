//! The certificates of Gateway HTTPS listeners, from the table
//! (`RoutingTable::listener_certificates`), chosen by SNI name as the Gateway API chooses a
//! listener: an exact hostname first, then the longest wildcard (`*.example.com` matches one
//! label, as it does for routes), then a listener without a hostname. A name none of them
//! matches falls through to `--tls-dir`'s certificates on the proxy's own TLS listener (see
//! [`crate::tls::edge`]).
//!
//! Which listeners are looked among depends on the socket, as routes do
//! ([`crate::runtime::Runtime::hosts_for`]): on an addressed Gateway's socket, that Gateway's
//! listeners on that port only (`ListenerCertificateEntry::port`), so two Gateways with the same
//! hostname on two addresses each serve their own certificate; on the proxy's own TLS listener,
//! the listeners of Gateways without an address of their own, or every listener for a proxy
//! without `--gateway-sockets` (which opens no Gateway socket).
//!
//! Parsed once per table, so a handshake only looks a name up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use tollgate_crds::table::{GatewayEntry, ListenerCertificateEntry};

use crate::tls::cert_store::parse_pair;

/// The certificates of one set of listeners, by SNI name.
#[derive(Debug, Default)]
pub struct CertsByName {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".suffix", certificate)` for `*.suffix`, longest suffix first.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    any: Option<Arc<CertifiedKey>>,
}

impl CertsByName {
    /// Add a listener's certificate (in id order: of two listeners with one hostname the first
    /// wins).
    fn insert(&mut self, hostname: Option<&str>, key: &Arc<CertifiedKey>) {
        match hostname.map(str::to_ascii_lowercase) {
            None => {
                self.any.get_or_insert_with(|| key.clone());
            }
            Some(host) => match host.strip_prefix('*') {
                Some(suffix) => {
                    if !self.wildcard.iter().any(|(s, _)| s == suffix) {
                        self.wildcard.push((suffix.to_string(), key.clone()));
                    }
                }
                None => {
                    self.exact.entry(host).or_insert_with(|| key.clone());
                }
            },
        }
    }

    /// Order the wildcards, once every listener is in.
    fn finish(&mut self) {
        // Longest suffix first: the most specific wildcard wins. Stable, so ties keep id order.
        self.wildcard
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    }

    /// Whether no listener certificate is here.
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
}

/// Listener certificates by socket, then SNI name.
#[derive(Debug, Default)]
pub struct ListenerCerts {
    /// The proxy's own TLS listener: listeners of Gateways without an address of their own.
    own: CertsByName,
    /// Each addressed Gateway's socket (address and listener port): its listeners on that port.
    scoped: HashMap<SocketAddr, CertsByName>,
    /// Every listener, for the own TLS listener of a proxy without `--gateway-sockets`; `None`
    /// when no listener is on an addressed Gateway (then it would be `own`).
    unscoped: Option<CertsByName>,
    /// No listener at all: a socket the table no longer has.
    none: CertsByName,
    /// `(id, notAfter)` of each certificate, for the expiry gauge.
    expiry: Vec<(String, i64)>,
}

impl ListenerCerts {
    /// Parse `entries` (sorted by id, so of two listeners with one hostname on one socket the
    /// first id wins) and place each on its socket: an entry with a port on its Gateway's
    /// (from `gateways`), one without on the proxy's own TLS listener. An entry whose PEM does
    /// not parse or whose key does not match its certificate is left out and described in the
    /// returned problems (`(id, why)`); the compiler checked that both are PEM, not that they
    /// belong together.
    pub fn build(
        entries: &[ListenerCertificateEntry],
        gateways: &[GatewayEntry],
    ) -> (ListenerCerts, Vec<(String, String)>) {
        let addresses: HashMap<&str, std::net::IpAddr> = gateways
            .iter()
            .map(|g| (g.id.as_str(), g.address))
            .collect();
        let mut certs = ListenerCerts::default();
        let mut unscoped = CertsByName::default();
        let mut bound = false;
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
            let hostname = e.hostname.as_deref();
            unscoped.insert(hostname, &served.key);
            match e.port {
                None => certs.own.insert(hostname, &served.key),
                Some(port) => {
                    bound = true;
                    // A Gateway the table does not list has no socket: served nowhere then.
                    if let Some(address) = addresses.get(e.gateway()) {
                        certs
                            .scoped
                            .entry(SocketAddr::new(*address, port))
                            .or_default()
                            .insert(hostname, &served.key);
                    }
                }
            }
        }
        certs.own.finish();
        for set in certs.scoped.values_mut() {
            set.finish();
        }
        unscoped.finish();
        certs.unscoped = bound.then_some(unscoped);
        (certs, problems)
    }

    /// The certificates that can be served on a connection accepted on `socket` (an addressed
    /// Gateway's; `None`: the proxy's own TLS listener), the proxy running with
    /// `--gateway-sockets` or not: the same split as [`crate::runtime::Runtime::hosts_for`].
    pub fn for_socket(&self, socket: Option<SocketAddr>, gateway_sockets: bool) -> &CertsByName {
        match socket {
            Some(socket) => self.scoped.get(&socket).unwrap_or(&self.none),
            None if gateway_sockets => &self.own,
            None => self.unscoped.as_ref().unwrap_or(&self.own),
        }
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
            port: None,
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
        let (all, problems) = ListenerCerts::build(&entries, &[]);
        assert!(problems.is_empty(), "{problems:?}");
        let certs = all.for_socket(None, false);
        assert!(same(certs.resolve(Some("api.example.com")), &exact));
        assert!(same(certs.resolve(Some("www.example.com")), &wide));
        assert!(same(certs.resolve(Some("shop.eu.example.com")), &narrow));
        // One label only: `a.b.example.com` is not `*.example.com`'s.
        assert!(same(certs.resolve(Some("a.b.example.com")), &any));
        assert!(same(certs.resolve(Some("other.test")), &any));
        assert!(same(certs.resolve(None), &any));
        assert_eq!(all.expiry().len(), 4);
        // Nothing is bound to a Gateway socket: the own listener serves them all either way.
        assert!(same(
            all.for_socket(None, true).resolve(Some("a.test")),
            &any
        ));
    }

    #[test]
    fn without_an_any_listener_an_unknown_name_has_none() {
        let exact = entry("ns/gw/exact", Some("api.example.com"), &["api.example.com"]);
        let (all, _) = ListenerCerts::build(&[exact], &[]);
        let certs = all.for_socket(None, false);
        assert!(certs.resolve(Some("other.test")).is_none());
        assert!(certs.resolve(None).is_none());
        assert!(!certs.is_empty());
        assert!(CertsByName::default().is_empty());
    }

    #[test]
    fn a_key_of_another_certificate_is_left_out_with_its_id() {
        let mut broken = entry("ns/gw/broken", Some("a.test"), &["a.test"]);
        broken.key_pem = entry("x/y/z", None, &["b.test"]).key_pem;
        let good = entry("ns/gw/good", Some("b.test"), &["b.test"]);
        let (all, problems) = ListenerCerts::build(&[broken, good.clone()], &[]);
        let certs = all.for_socket(None, false);
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

    fn on(port: u16, e: ListenerCertificateEntry) -> ListenerCertificateEntry {
        ListenerCertificateEntry {
            port: Some(port),
            ..e
        }
    }

    fn gateway(id: &str, address: &str, ports: &[u16]) -> GatewayEntry {
        GatewayEntry {
            id: id.into(),
            address: address.parse().expect("address"),
            ports: ports
                .iter()
                .map(|&port| tollgate_crds::table::GatewayPortEntry { port, tls: true })
                .collect(),
        }
    }

    #[test]
    fn an_addressed_gateways_socket_serves_only_its_listeners_on_that_port() {
        let one_api = on(443, entry("ns/one/api", Some("api.test"), &["api.test"]));
        let one_any = on(443, entry("ns/one/rest", None, &["one.test"]));
        let one_alt = on(8443, entry("ns/one/alt", Some("api.test"), &["api.test"]));
        let two_api = on(443, entry("ns/two/api", Some("api.test"), &["api.test"]));
        let two_wild = on(443, entry("ns/two/wild", Some("*.test"), &["*.test"]));
        let own_api = entry("ns/own/api", Some("api.test"), &["api.test"]);
        let own_other = entry("ns/own/other", Some("other.example"), &["other.example"]);
        // Bound to a Gateway the table does not list: on no socket.
        let lost = on(443, entry("ns/gone/api", Some("lost.test"), &["lost.test"]));
        let gateways = [
            gateway("ns/one", "127.0.0.9", &[443, 8443]),
            gateway("ns/two", "127.0.0.10", &[443]),
        ];
        let entries = [
            lost.clone(),
            one_alt.clone(),
            one_api.clone(),
            one_any.clone(),
            own_api.clone(),
            own_other.clone(),
            two_api.clone(),
            two_wild.clone(),
        ];
        let (certs, problems) = ListenerCerts::build(&entries, &gateways);
        assert!(problems.is_empty(), "{problems:?}");
        let socket = |s: &str| Some(s.parse::<SocketAddr>().expect("socket"));
        let one = certs.for_socket(socket("127.0.0.9:443"), true);
        let one_8443 = certs.for_socket(socket("127.0.0.9:8443"), true);
        let two = certs.for_socket(socket("127.0.0.10:443"), true);
        // One hostname, three sockets, three certificates.
        assert!(same(one.resolve(Some("api.test")), &one_api));
        assert!(same(one_8443.resolve(Some("api.test")), &one_alt));
        assert!(same(two.resolve(Some("api.test")), &two_api));
        // Within a socket: exact, then wildcard, then a listener without hostname.
        assert!(same(two.resolve(Some("www.test")), &two_wild));
        assert!(same(one.resolve(Some("www.test")), &one_any));
        assert!(same(one.resolve(None), &one_any));
        // Nothing of another socket or of the own listener.
        assert!(two.resolve(Some("other.example")).is_none());
        assert!(two.resolve(None).is_none());
        assert!(one_8443.resolve(Some("other.example")).is_none());
        // A socket the table does not have serves nothing.
        assert!(certs
            .for_socket(socket("127.0.0.10:8443"), true)
            .resolve(Some("api.test"))
            .is_none());
        // The own TLS listener with --gateway-sockets: the unbound listeners only.
        let own = certs.for_socket(None, true);
        assert!(same(own.resolve(Some("api.test")), &own_api));
        assert!(same(own.resolve(Some("other.example")), &own_other));
        assert!(own.resolve(Some("www.test")).is_none());
        assert!(own.resolve(Some("lost.test")).is_none());
        // Without --gateway-sockets: every listener, as before sockets (first id wins).
        let every = certs.for_socket(None, false);
        assert!(same(every.resolve(Some("api.test")), &one_alt));
        assert!(same(every.resolve(Some("www.test")), &two_wild));
        assert!(same(every.resolve(Some("lost.test")), &lost));
        assert!(same(every.resolve(None), &one_any));
        assert_eq!(certs.expiry().len(), entries.len());
    }
}
