//! BackendTLSPolicy (Gateway API standard channel): TLS from the proxies to the Services that
//! HTTPRoutes send to.
//!
//! Pure. [`Evaluated::new`] checks every policy once (its hostname, its CA bundle from
//! ConfigMaps or the system roots) and settles which policy wins each Service (and port name,
//! its `sectionName`): the oldest, then by namespace/name, as the Gateway API says; the others
//! are `Conflicted` there. The translation then gives each resolved backendRef its winner
//! ([`Evaluated::for_service`]), and writes each policy's `status.ancestors` from the routes
//! that send to its Services ([`Evaluated::statuses`]).
//!
//! Fail closed: a backendRef whose Service has a policy that is not accepted (a CA that does not
//! resolve, a field Tollgate does not support) is never sent to in the clear; its rule answers
//! `500`, like a backendRef that does not resolve.

use std::collections::{BTreeMap, BTreeSet};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::api::backendtlspolicies::{
    BackendTlsPolicy, BackendTlsPolicyValidationSubjectAltNamesType as SanType,
};
use super::ir::{Inputs, ServiceTls};
use super::status::{condition, MAX_ANCESTORS};
use super::{namespace_of, CONTROLLER_NAME};
use crate::policy::{AncestorRef, PolicyAncestorStatus};
use crate::table::SubjectAltName;

/// For each of our Gateways (namespace, name), the Services (namespace, name, port name) its
/// accepted routes send to.
pub(crate) type ServicesByGateway =
    BTreeMap<(String, String), BTreeSet<(String, String, Option<String>)>>;

/// The key a CA bundle ConfigMap holds it under.
pub const CA_CRT: &str = "ca.crt";
/// The one `wellKnownCACertificates` value: the proxies' public web roots.
pub const SYSTEM: &str = "System";

/// What one policy is, once checked.
#[derive(Clone, Debug)]
enum Verdict {
    Accepted {
        hostname: String,
        ca_pem: Option<String>,
        sans: Vec<SubjectAltName>,
    },
    Refused {
        /// `Accepted=False` reason: `Invalid` or `NoValidCACertificate`.
        reason: &'static str,
        /// `ResolvedRefs=False` reason when a CA reference is the problem.
        refs: Option<&'static str>,
        message: String,
    },
}

struct Checked<'a> {
    policy: &'a BackendTlsPolicy,
    namespace: String,
    name: String,
    verdict: Verdict,
}

/// Every BackendTLSPolicy, checked, and the winner of each Service target.
pub(crate) struct Evaluated<'a> {
    policies: Vec<Checked<'a>>,
    /// (namespace, Service, sectionName) → index of the winning policy.
    winners: BTreeMap<(String, String, Option<String>), usize>,
    /// (policy index, Service, sectionName) targets that lost to an older policy, with its id.
    lost: Vec<(usize, String, Option<String>, String)>,
}

impl<'a> Evaluated<'a> {
    /// Check every policy of `inputs` and settle conflicts.
    pub(crate) fn new(inputs: &Inputs<'a>) -> Evaluated<'a> {
        let mut policies: Vec<Checked<'a>> = inputs
            .backend_tls_policies
            .iter()
            .map(|p| {
                let namespace = namespace_of(p.metadata.namespace.as_deref());
                Checked {
                    verdict: check(p, &namespace, inputs),
                    name: p.metadata.name.clone().unwrap_or_default(),
                    namespace,
                    policy: p,
                }
            })
            .collect();
        // Oldest first; without a creationTimestamp counts as newest; then namespace/name.
        policies.sort_by(|a, b| {
            super::oldest_first(
                (&a.policy.metadata, &a.namespace, &a.name),
                (&b.policy.metadata, &b.namespace, &b.name),
            )
        });
        let mut winners = BTreeMap::new();
        let mut lost = Vec::new();
        for (i, p) in policies.iter().enumerate() {
            for t in &p.policy.spec.target_refs {
                if !t.group.is_empty() || t.kind != "Service" {
                    continue;
                }
                let key = (p.namespace.clone(), t.name.clone(), t.section_name.clone());
                match winners.get(&key) {
                    Some(&first) => {
                        let older: &Checked<'_> = &policies[first];
                        lost.push((
                            i,
                            t.name.clone(),
                            t.section_name.clone(),
                            format!("{}/{}", older.namespace, older.name),
                        ));
                    }
                    None => {
                        winners.insert(key, i);
                    }
                }
            }
        }
        Evaluated {
            policies,
            winners,
            lost,
        }
    }

    /// The TLS for a backendRef to Service `namespace/service` on the port named `port_name`:
    /// the policy naming that port wins over one for the whole Service.
    pub(crate) fn for_service(
        &self,
        namespace: &str,
        service: &str,
        port_name: Option<&str>,
    ) -> Option<ServiceTls> {
        let key = |section: Option<&str>| {
            (
                namespace.to_string(),
                service.to_string(),
                section.map(str::to_string),
            )
        };
        let index = port_name
            .and_then(|p| self.winners.get(&key(Some(p))))
            .or_else(|| self.winners.get(&key(None)))?;
        let p = &self.policies[*index];
        let policy = format!("{}/{}", p.namespace, p.name);
        Some(match &p.verdict {
            Verdict::Accepted {
                hostname,
                ca_pem,
                sans,
            } => ServiceTls {
                policy,
                hostname: hostname.clone(),
                ca_digest: ca_pem.as_deref().map(digest),
                ca_pem: ca_pem.clone(),
                subject_alt_names: sans.clone(),
                refused: None,
            },
            Verdict::Refused { message, .. } => ServiceTls {
                policy,
                hostname: String::new(),
                ca_pem: None,
                ca_digest: None,
                subject_alt_names: Vec::new(),
                refused: Some(message.clone()),
            },
        })
    }

    /// Each policy's `status.ancestors` entries (ours), given `uses`: for each Gateway (its
    /// namespace and name), the Services (namespace, name, port name) its accepted routes send
    /// to. Policies none of whose Services are used get none.
    pub(crate) fn statuses(
        &self,
        uses: &ServicesByGateway,
    ) -> Vec<super::status::BackendTlsPolicyState> {
        let mut out = Vec::new();
        for (i, p) in self.policies.iter().enumerate() {
            let mut ancestors = Vec::new();
            for ((gw_ns, gw_name), services) in uses {
                let mut conflicted: Option<&str> = None;
                let mut used = false;
                for t in &p.policy.spec.target_refs {
                    if !t.group.is_empty() || t.kind != "Service" {
                        continue;
                    }
                    let hit = services.iter().any(|(ns, svc, port)| {
                        ns == &p.namespace
                            && svc == &t.name
                            && (t.section_name.is_none() || t.section_name == *port)
                    });
                    if !hit {
                        continue;
                    }
                    used = true;
                    if let Some((_, _, _, older)) = self.lost.iter().find(|(j, svc, section, _)| {
                        *j == i && svc == &t.name && section == &t.section_name
                    }) {
                        conflicted = Some(older);
                    }
                }
                if !used {
                    continue;
                }
                let generation = p.policy.metadata.generation;
                let conditions = match (&p.verdict, conflicted) {
                    (_, Some(older)) => vec![
                        condition(
                            "Accepted",
                            false,
                            "Conflicted",
                            format!("BackendTLSPolicy {older}, which is older, targets the same Service and wins"),
                            generation,
                        ),
                        condition("ResolvedRefs", true, "ResolvedRefs", "references resolved", generation),
                    ],
                    (Verdict::Accepted { .. }, None) => vec![
                        condition(
                            "Accepted",
                            true,
                            "Accepted",
                            "the proxies use TLS to this policy's Services",
                            generation,
                        ),
                        condition("ResolvedRefs", true, "ResolvedRefs", "references resolved", generation),
                    ],
                    (
                        Verdict::Refused {
                            reason,
                            refs,
                            message,
                        },
                        None,
                    ) => vec![
                        condition(
                            "Accepted",
                            false,
                            reason,
                            format!("{message}; requests to its Services are answered 500, never sent in the clear"),
                            generation,
                        ),
                        match refs {
                            Some(r) => condition("ResolvedRefs", false, r, message.clone(), generation),
                            None => condition("ResolvedRefs", true, "ResolvedRefs", "references resolved", generation),
                        },
                    ],
                };
                ancestors.push(PolicyAncestorStatus {
                    ancestor_ref: AncestorRef {
                        group: crate::product::GATEWAY_API_GROUP.to_string(),
                        kind: "Gateway".to_string(),
                        namespace: Some(gw_ns.clone()),
                        name: gw_name.clone(),
                        section_name: None,
                    },
                    controller_name: CONTROLLER_NAME.to_string(),
                    conditions,
                });
            }
            if !ancestors.is_empty() {
                ancestors.truncate(MAX_ANCESTORS);
                out.push(super::status::BackendTlsPolicyState {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    ancestors,
                });
            }
        }
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }
}

/// The first 12 hex digits of the SHA-256 of `text`.
fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))[..12].to_string()
}

/// Check one policy in `namespace`: what it asks is something Tollgate does, and its CA
/// references resolve to PEM certificates.
fn check(p: &BackendTlsPolicy, namespace: &str, inputs: &Inputs<'_>) -> Verdict {
    let v = &p.spec.validation;
    let invalid = |message: String| Verdict::Refused {
        reason: "Invalid",
        refs: None,
        message,
    };
    let mut sans = Vec::new();
    for (i, san) in v.subject_alt_names.iter().flatten().enumerate() {
        let at = format!("validation.subjectAltNames[{i}]");
        match san.r#type {
            SanType::Hostname => match san.hostname.as_deref().map(str::to_ascii_lowercase) {
                Some(h) if crate::syntax::is_hostname(&h) => {
                    sans.push(SubjectAltName::Hostname(h));
                }
                _ => return invalid(format!("{at}: type Hostname needs a DNS name in hostname")),
            },
            SanType::Uri => match san.uri.as_deref() {
                Some(u) if u.contains("://") || u.contains(':') => {
                    sans.push(SubjectAltName::Uri(u.to_string()));
                }
                _ => return invalid(format!("{at}: type URI needs a URI with a scheme in uri")),
            },
        }
    }
    let hostname = v.hostname.to_ascii_lowercase();
    if !crate::syntax::is_hostname(&hostname) || hostname.starts_with("*.") {
        return invalid(format!(
            "validation.hostname `{}` is not a DNS name (no wildcard, no IP address)",
            v.hostname
        ));
    }
    let refs = v.ca_certificate_refs.as_deref().unwrap_or_default();
    let well_known = v
        .well_known_ca_certificates
        .as_deref()
        .filter(|w| !w.is_empty());
    match (refs.is_empty(), well_known) {
        (false, Some(_)) | (true, None) => {
            return invalid(
                "set exactly one of validation.caCertificateRefs or validation.wellKnownCACertificates"
                    .to_string(),
            )
        }
        (true, Some(SYSTEM)) => {
            return Verdict::Accepted {
                hostname,
                ca_pem: None,
                sans,
            }
        }
        (true, Some(other)) => {
            return invalid(format!(
                "validation.wellKnownCACertificates `{other}` is not supported; use System (the public web roots)"
            ))
        }
        (false, None) => {}
    }
    let mut bundle = String::new();
    let mut problems = Vec::new();
    let mut kind_problem = false;
    for (i, r) in refs.iter().enumerate() {
        let at = format!("validation.caCertificateRefs[{i}]");
        if !r.group.is_empty() || r.kind != "ConfigMap" {
            kind_problem = true;
            problems.push(format!(
                "{at}: {}/{} is not a core ConfigMap, the only kind supported",
                r.group, r.kind
            ));
            continue;
        }
        let found = inputs.config_maps.iter().find(|c| {
            c.metadata.name.as_deref() == Some(r.name.as_str())
                && namespace_of(c.metadata.namespace.as_deref()) == namespace
        });
        let Some(map) = found else {
            problems.push(format!(
                "{at}: ConfigMap {namespace}/{} does not exist",
                r.name
            ));
            continue;
        };
        let Some(pem) = map.data.as_ref().and_then(|d| d.get(CA_CRT)) else {
            problems.push(format!(
                "{at}: ConfigMap {namespace}/{} has no `{CA_CRT}`",
                r.name
            ));
            continue;
        };
        let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
        if certs.is_empty() || certs.iter().any(Result::is_err) {
            problems.push(format!(
                "{at}: `{CA_CRT}` of ConfigMap {namespace}/{} is not PEM certificates",
                r.name
            ));
            continue;
        }
        bundle.push_str(pem.trim_end());
        bundle.push('\n');
    }
    if problems.is_empty() {
        return Verdict::Accepted {
            hostname,
            ca_pem: Some(bundle),
            sans,
        };
    }
    // One bad reference fails the policy: a backend is never reached with a weaker check than
    // the one written.
    Verdict::Refused {
        reason: if problems.len() == refs.len() {
            "NoValidCACertificate"
        } else {
            "Invalid"
        },
        refs: Some(if kind_problem {
            "InvalidKind"
        } else {
            "InvalidCACertificateRef"
        }),
        message: problems.join("; "),
    }
}
