//! The workload CA: certifies proxies' keys for their ServiceAccount's SPIFFE id.
//!
//! The root (certificate and key) lives in a `kubernetes.io/tls` Secret in the operator's
//! namespace: created on first start if missing and reused afterwards, so restarts and replicas
//! share one CA; or supplied by the user (`--ca-secret`, never created nor changed by the
//! operator: a root, or an intermediate whose chain is `tls.crt` and whose root is `ca.crt`).
//! The trust bundle (the root, PEM) is published in a ConfigMap of the same namespace.
//!
//! Pure core: [`spiffe_id`], [`validity`], [`read_csr`] and [`Authority::issue`] decide; [`run`]
//! is the thin edge that reads and writes the Secret and the ConfigMap.
//!
//! # Guarantees
//!
//! - The certified name is derived only from the caller's verified ServiceAccount; names in the
//!   CSR are ignored.
//! - A CSR is certified only after its self-signature verifies (its sender holds the key).
//! - The CA's private key is never logged, counted nor formatted (`Authority`'s `Debug` omits it).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use tokio::sync::watch;

/// Name of the operator's own CA Secret (when `--ca-secret` is not given).
pub const DEFAULT_SECRET: &str = "tollgate-workload-ca";
/// Name of the trust bundle ConfigMap.
pub const DEFAULT_BUNDLE_CONFIGMAP: &str = "tollgate-trust-bundle";
/// The ConfigMap key holding the bundle (PEM).
pub const BUNDLE_KEY: &str = "ca.crt";
/// How far back a certificate's `notBefore` is set, so a peer whose clock is a little behind
/// does not refuse a certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(60);
/// Default lifetime of an issued certificate.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of a root the operator generates.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Time between two passes re-reading the Secret and re-publishing the bundle once ready (a
/// user-rotated CA is picked up, a deleted ConfigMap is recreated).
const REFRESH: Duration = Duration::from_secs(300);
/// Time between attempts while the CA is not ready.
const RETRY: Duration = Duration::from_secs(5);
/// Largest CSR accepted, bytes (a P-384 or RSA-4096 CSR is well under 4 KiB).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Where the CA lives and what it issues.
#[derive(Clone, Debug)]
pub struct CaConfig {
    /// The operator's namespace (the Secret's and the ConfigMap's).
    pub namespace: String,
    /// The CA Secret.
    pub secret: String,
    /// The Secret is the user's (`--ca-secret`): never created nor written.
    pub user_supplied: bool,
    /// The trust bundle ConfigMap.
    pub bundle_configmap: String,
    /// SPIFFE trust domain of issued identities.
    pub trust_domain: String,
    /// Lifetime of issued certificates.
    pub lifetime: Duration,
}

/// The CA once loaded; `None` until [`run`] has read (or created) the Secret.
pub type CaCell = Arc<ArcSwapOption<Authority>>;

/// Why the CA cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A call to the Kubernetes API failed.
    #[error("{action} {object}: {source}")]
    Kube {
        /// What was attempted.
        action: &'static str,
        /// `Kind namespace/name`.
        object: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The user's `--ca-secret` does not exist.
    #[error("Secret {0} (--ca-secret) does not exist: create it with tls.crt and tls.key (and ca.crt for an intermediate), or drop --ca-secret to let the operator make its own CA")]
    Missing(String),
    /// The Secret exists but cannot be used.
    #[error("Secret {object}: {field}: {reason}")]
    Unusable {
        /// `Secret namespace/name`.
        object: String,
        /// The data key concerned.
        field: &'static str,
        /// What is wrong (never the key's content).
        reason: String,
    },
    /// Generating a new root failed.
    #[error("generating the workload CA: {0}")]
    Generate(String),
}

/// Why a CSR is refused: the caller's fault, answered with `400`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    /// Not a PEM `CERTIFICATE REQUEST`, or not a PKCS#10 request.
    #[error("the body is not a PEM CERTIFICATE REQUEST (PKCS#10): {0}")]
    Malformed(String),
    /// The CSR's signature does not verify with its own public key.
    #[error("the CSR's signature does not verify with its public key")]
    BadSignature,
    /// A key type the CA does not certify.
    #[error("unsupported key type {0}: use ECDSA P-256 or P-384, Ed25519 or RSA")]
    UnsupportedKey(String),
}

impl CsrError {
    /// The metric label and problem slug suffix.
    pub fn reason(&self) -> &'static str {
        match self {
            CsrError::Malformed(_) => "malformed_csr",
            CsrError::BadSignature => "bad_signature",
            CsrError::UnsupportedKey(_) => "unsupported_key",
        }
    }
}

/// Why an authenticated user gets no identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// Not `system:serviceaccount:<ns>:<sa>` with valid names.
    #[error("{0} is not a ServiceAccount")]
    NotServiceAccount(String),
}

/// The SPIFFE id of a TokenReview's username: `system:serviceaccount:NS:SA` →
/// `spiffe://TD/ns/NS/sa/SA`. Namespace and ServiceAccount names must be DNS labels or
/// subdomains (what the API server allows), so nothing else can end up in the URI.
pub fn spiffe_id(trust_domain: &str, username: &str) -> Result<String, IdentityError> {
    let refused = || IdentityError::NotServiceAccount(username.to_string());
    let rest = username
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(refused)?;
    let (ns, sa) = rest.split_once(':').ok_or_else(refused)?;
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if !name_ok(ns) || !name_ok(sa) {
        return Err(refused());
    }
    Ok(format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}"))
}

/// `(notBefore, notAfter)` of a certificate issued at `now`: backdated by [`BACKDATE`], valid
/// for `lifetime` from `now`.
pub fn validity(now: SystemTime, lifetime: Duration) -> (SystemTime, SystemTime) {
    (now - BACKDATE, now + lifetime)
}

/// The public key of a verified CSR, in the form rcgen certifies.
pub struct CsrKey {
    spki_key: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.spki_key
    }
    fn algorithm(&self) -> &SignatureAlgorithm {
        self.algorithm
    }
}

/// Parse a PEM CSR, check its key type and its self-signature; its requested names and
/// extensions are ignored.
pub fn read_csr(pem: &[u8]) -> Result<CsrKey, CsrError> {
    use x509_parser::prelude::FromDer as _;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|_| CsrError::Malformed("no PEM block".into()))?;
    if block.label != "CERTIFICATE REQUEST" && block.label != "NEW CERTIFICATE REQUEST" {
        return Err(CsrError::Malformed(format!(
            "a PEM {:?} block, not a CERTIFICATE REQUEST",
            block.label
        )));
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
    let spki = &csr.certification_request_info.subject_pki;
    let key_oid = spki.algorithm.algorithm.to_id_string();
    let algorithm = match key_oid.as_str() {
        // id-ecPublicKey: the curve is the parameter.
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => &rcgen::PKCS_ECDSA_P256_SHA256,
                "1.3.132.0.34" => &rcgen::PKCS_ECDSA_P384_SHA384,
                other => return Err(CsrError::UnsupportedKey(format!("EC curve {other}"))),
            }
        }
        "1.3.101.112" => &rcgen::PKCS_ED25519,
        "1.2.840.113549.1.1.1" => &rcgen::PKCS_RSA_SHA256,
        other => return Err(CsrError::UnsupportedKey(other.to_string())),
    };
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    Ok(CsrKey {
        spki_key: spki.subject_public_key.data.to_vec(),
        algorithm,
    })
}

/// A certificate issued for a CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The leaf, then any intermediates (PEM).
    pub chain_pem: String,
    /// End of validity.
    pub not_after: SystemTime,
}

/// Issuing failed after the CSR was accepted (the CA's fault, not the caller's).
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CSR is refused.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// Signing failed.
    #[error("signing the certificate: {0}")]
    Sign(String),
}

/// The loaded CA: the issuer's certificate and key, and what goes with every issued leaf.
pub struct Authority {
    issuer: rcgen::Certificate,
    key: KeyPair,
    /// Intermediates appended to every leaf (empty for a root).
    intermediates_pem: String,
    bundle_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Authority")
            .field("bundle_pem", &self.bundle_pem)
            .finish_non_exhaustive()
    }
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A random positive 16-byte serial.
fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The first PEM certificate of `pem`, DER.
fn first_certificate(pem: &str) -> Option<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    (block.label == "CERTIFICATE").then_some(block.contents)
}

impl Authority {
    /// A new self-signed root valid from `now` (backdated) for ten years: `(certificate PEM,
    /// key PEM)`, to be stored in the Secret.
    pub fn generate(now: SystemTime) -> Result<(String, String), CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Generate(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Tollgate");
        dn.push(DnType::CommonName, "Tollgate workload CA");
        params.distinguished_name = dn;
        // Signs leaves only.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (not_before, not_after) = validity(now, ROOT_LIFETIME);
        params.not_before = offset(not_before);
        params.not_after = offset(not_after);
        params.serial_number = Some(serial());
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Generate(e.to_string()))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Load a CA from its certificate chain (`tls.crt`: the issuer first), key (`tls.key`) and,
    /// for an intermediate, the root (`ca.crt`). `object` names the Secret in errors.
    pub fn from_pem(
        object: &str,
        cert_pem: &str,
        key_pem: &str,
        root_pem: Option<&str>,
    ) -> Result<Authority, CaError> {
        let unusable = |field: &'static str, reason: String| CaError::Unusable {
            object: object.to_string(),
            field,
            reason,
        };
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| unusable("tls.key", format!("not a usable private key: {e}")))?;
        let der = first_certificate(cert_pem)
            .ok_or_else(|| unusable("tls.crt", "no PEM CERTIFICATE".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| unusable("tls.crt", format!("not a certificate: {e}")))?;
        if parsed.tbs_certificate.subject_pki.raw != key.public_key_der().as_slice() {
            return Err(unusable(
                "tls.key",
                "does not match the certificate in tls.crt".into(),
            ));
        }
        let params = CertificateParams::from_ca_cert_der(&der.clone().into())
            .map_err(|e| unusable("tls.crt", format!("cannot be read: {e}")))?;
        if matches!(params.is_ca, IsCa::NoCa | IsCa::ExplicitNoCa) {
            return Err(unusable("tls.crt", "is not a CA certificate".into()));
        }
        // rcgen signs with the issuer's name and key identifier taken from these params; the
        // re-made self-signed certificate is only a carrier for them, never published.
        let issuer = params
            .self_signed(&key)
            .map_err(|e| unusable("tls.crt", format!("cannot be used to sign: {e}")))?;
        let root_pem = root_pem.map(str::trim).filter(|r| !r.is_empty());
        let (intermediates_pem, bundle_pem) = match root_pem {
            Some(root) if root != cert_pem.trim() => {
                (ensure_newline(cert_pem.trim()), ensure_newline(root))
            }
            _ => (String::new(), ensure_newline(cert_pem.trim())),
        };
        Ok(Authority {
            issuer,
            key,
            intermediates_pem,
            bundle_pem,
        })
    }

    /// Load from a Secret's `tls.crt`, `tls.key` and optional `ca.crt`.
    pub fn from_secret(object: &str, secret: &Secret) -> Result<Authority, CaError> {
        let field = |name: &'static str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(name))
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        };
        let missing = |name: &'static str| CaError::Unusable {
            object: object.to_string(),
            field: name,
            reason: "missing".into(),
        };
        let cert = field("tls.crt").ok_or_else(|| missing("tls.crt"))?;
        let key = field("tls.key").ok_or_else(|| missing("tls.key"))?;
        Authority::from_pem(object, &cert, &key, field("ca.crt").as_deref())
    }

    /// The roots proxies trust (PEM).
    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// Certify the key of `csr_pem` for `spiffe_id` (and nothing else), valid per [`validity`].
    pub fn issue(
        &self,
        csr_pem: &[u8],
        spiffe_id: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Issued, IssueError> {
        let key = read_csr(csr_pem)?;
        let uri = rcgen::Ia5String::try_from(spiffe_id.to_string())
            .map_err(|e| IssueError::Sign(format!("SPIFFE id {spiffe_id}: {e}")))?;
        let mut params = CertificateParams::default();
        // SPIFFE: the identity is the URI SAN; the subject stays empty.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (not_before, not_after) = validity(now, lifetime);
        params.not_before = offset(not_before);
        params.not_after = offset(not_after);
        params.serial_number = Some(serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(|e| IssueError::Sign(e.to_string()))?;
        // The certificate holds whole seconds: report what it says.
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(offset(not_after).unix_timestamp().max(0) as u64);
        Ok(Issued {
            chain_pem: format!("{}{}", ensure_newline(&cert.pem()), self.intermediates_pem),
            not_after,
        })
    }
}

fn ensure_newline(s: &str) -> String {
    let mut s = s.trim_end().to_string();
    s.push('\n');
    s
}

/// Read (or create) the CA Secret, publish the bundle, and return the CA.
async fn ensure(client: &Client, config: &CaConfig) -> Result<Authority, CaError> {
    let object = format!("{}/{}", config.namespace, config.secret);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
    let kube = |action: &'static str, object: &str| {
        let object = object.to_string();
        move |source| CaError::Kube {
            action,
            object,
            source,
        }
    };
    let secret = match secrets
        .get_opt(&config.secret)
        .await
        .map_err(kube("read", &format!("Secret {object}")))?
    {
        Some(s) => s,
        None if config.user_supplied => return Err(CaError::Missing(object)),
        None => {
            let (cert, key) = Authority::generate(SystemTime::now())?;
            let secret: Secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(config.secret.clone()),
                    labels: Some(
                        [(
                            "app.kubernetes.io/managed-by".to_string(),
                            "tollgate-operator".to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(
                    [
                        ("tls.crt".to_string(), ByteString(cert.into_bytes())),
                        ("tls.key".to_string(), ByteString(key.into_bytes())),
                    ]
                    .into(),
                ),
                ..Default::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(created) => {
                    tracing::info!(secret = %object, "created the workload CA");
                    created
                }
                // Another replica made it first: use theirs, so there is one CA.
                Err(kube::Error::Api(e)) if e.code == 409 => secrets
                    .get(&config.secret)
                    .await
                    .map_err(kube("read", &format!("Secret {object}")))?,
                Err(e) => return Err(kube("create", &format!("Secret {object}"))(e)),
            }
        }
    };
    let authority = Authority::from_secret(&format!("Secret {object}"), &secret)?;
    publish_bundle(client, config, authority.bundle_pem()).await?;
    Ok(authority)
}

/// Create the bundle ConfigMap, or patch its `ca.crt` when it differs.
async fn publish_bundle(client: &Client, config: &CaConfig, bundle: &str) -> Result<(), CaError> {
    let object = format!("ConfigMap {}/{}", config.namespace, config.bundle_configmap);
    let err = |action: &'static str| {
        let object = object.clone();
        move |source| CaError::Kube {
            action,
            object,
            source,
        }
    };
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &config.namespace);
    match maps
        .get_opt(&config.bundle_configmap)
        .await
        .map_err(err("read"))?
    {
        Some(map) => {
            let current = map.data.as_ref().and_then(|d| d.get(BUNDLE_KEY));
            if current.map(String::as_str) != Some(bundle) {
                let patch = serde_json::json!({"data": {BUNDLE_KEY: bundle}});
                maps.patch(
                    &config.bundle_configmap,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(err("update"))?;
                tracing::info!(configmap = %object, "published the trust bundle");
            }
        }
        None => {
            let map = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(config.bundle_configmap.clone()),
                    ..Default::default()
                },
                data: Some([(BUNDLE_KEY.to_string(), bundle.to_string())].into()),
                ..Default::default()
            };
            match maps.create(&PostParams::default(), &map).await {
                Ok(_) => tracing::info!(configmap = %object, "published the trust bundle"),
                // Another replica published it; the next pass checks its content.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(err("create")(e)),
            }
        }
    }
    Ok(())
}

/// Keep `cell` loaded from the CA Secret until `shutdown` turns true: retry every few seconds
/// until ready, then refresh every few minutes.
pub async fn run(
    client: Client,
    config: CaConfig,
    cell: CaCell,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let wait = match ensure(&client, &config).await {
            Ok(authority) => {
                if cell.load().is_none() {
                    tracing::info!(secret = %config.secret, namespace = %config.namespace, "workload CA ready");
                }
                cell.store(Some(Arc::new(authority)));
                REFRESH
            }
            Err(e) => {
                // While loaded, keep issuing with the CA we have.
                tracing::warn!(error = %e, "workload CA not ready; the certificate endpoint answers 503 until it is");
                if cell.load().is_some() {
                    REFRESH
                } else {
                    RETRY
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn authority() -> Authority {
        let (cert, key) = Authority::generate(now()).expect("a root");
        Authority::from_pem("Secret t/ca", &cert, &key, None).expect("loads")
    }

    fn csr(key: &KeyPair, sans: &[&str]) -> String {
        let mut params = CertificateParams::default();
        for s in sans {
            params.subject_alt_names.push(SanType::URI(
                rcgen::Ia5String::try_from(s.to_string()).expect("ia5"),
            ));
        }
        params
            .serialize_request(key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    fn parse(pem: &str) -> Vec<u8> {
        first_certificate(pem).expect("a certificate")
    }

    fn uri_sans(der: &[u8]) -> Vec<String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).expect("x509");
        cert.subject_alternative_name()
            .expect("san ok")
            .map(|s| {
                s.value
                    .general_names
                    .iter()
                    .map(|n| match n {
                        x509_parser::extensions::GeneralName::URI(u) => u.to_string(),
                        other => format!("{other:?}"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn the_spiffe_id_comes_from_the_service_account_username() {
        assert_eq!(
            spiffe_id("cluster.local", "system:serviceaccount:shop:api"),
            Ok("spiffe://cluster.local/ns/shop/sa/api".to_string())
        );
        for bad in [
            "system:serviceaccount:shop",
            "system:serviceaccount::api",
            "system:serviceaccount:shop:",
            "system:serviceaccount:shop:api/../x",
            "system:serviceaccount:Shop:api",
            "system:serviceaccount:shop:api:extra",
            "kubernetes-admin",
            "system:node:worker-1",
        ] {
            assert!(spiffe_id("cluster.local", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validity_is_backdated_a_minute_and_lasts_the_lifetime() {
        let (nb, na) = validity(now(), DEFAULT_LIFETIME);
        assert_eq!(now().duration_since(nb).expect("before"), BACKDATE);
        assert_eq!(
            na.duration_since(now()).expect("after"),
            Duration::from_secs(86_400)
        );
        let issued = authority()
            .issue(
                csr(&KeyPair::generate().expect("key"), &[]).as_bytes(),
                "spiffe://td/ns/a/sa/b",
                now(),
                Duration::from_secs(3600),
            )
            .expect("issued");
        assert_eq!(issued.not_after, now() + Duration::from_secs(3600));
        let der = parse(&issued.chain_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        let epoch = |s: u64| s as i64;
        assert_eq!(
            cert.validity().not_before.timestamp(),
            epoch(1_800_000_000 - 60)
        );
        assert_eq!(
            cert.validity().not_after.timestamp(),
            epoch(1_800_000_000 + 3600)
        );
    }

    #[test]
    fn a_csr_asking_for_another_name_gets_the_token_s_name_only() {
        let ca = authority();
        let key = KeyPair::generate().expect("key");
        let asked = csr(&key, &["spiffe://td/ns/kube-system/sa/admin"]);
        let issued = ca
            .issue(
                asked.as_bytes(),
                "spiffe://td/ns/shop/sa/api",
                now(),
                DEFAULT_LIFETIME,
            )
            .expect("issued");
        let der = parse(&issued.chain_pem);
        assert_eq!(uri_sans(&der), ["spiffe://td/ns/shop/sa/api"]);
        // The certified key is the CSR's, and the CA signed it.
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).expect("x509");
        assert_eq!(
            leaf.tbs_certificate.subject_pki.raw,
            key.public_key_der().as_slice()
        );
        let root_der = parse(ca.bundle_pem());
        let (_, root) = x509_parser::parse_x509_certificate(&root_der).expect("root");
        leaf.verify_signature(Some(root.public_key()))
            .expect("chains to the bundle");
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn a_csr_with_a_bad_signature_is_refused() {
        let key = KeyPair::generate().expect("key");
        let pem = csr(&key, &[]);
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        let mut der = block.contents;
        // The signature is the last bytes: flip one.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert_eq!(
            read_csr(tampered.as_bytes()).err(),
            Some(CsrError::BadSignature)
        );
        assert!(read_csr(pem.as_bytes()).is_ok());
    }

    #[test]
    fn junk_and_other_pem_blocks_are_malformed() {
        assert!(matches!(read_csr(b"hello"), Err(CsrError::Malformed(_))));
        let (cert, _) = Authority::generate(now()).expect("root");
        assert!(matches!(
            read_csr(cert.as_bytes()),
            Err(CsrError::Malformed(_))
        ));
        let junk = pem::encode(&pem::Pem::new(
            "CERTIFICATE REQUEST",
            vec![0x30, 0x03, 1, 2, 3],
        ));
        assert!(matches!(
            read_csr(junk.as_bytes()),
            Err(CsrError::Malformed(_))
        ));
    }

    #[test]
    fn other_key_types_are_certified_or_named() {
        let ca = authority();
        for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let key = KeyPair::generate_for(alg).expect("key");
            ca.issue(
                csr(&key, &[]).as_bytes(),
                "spiffe://td/ns/a/sa/b",
                now(),
                DEFAULT_LIFETIME,
            )
            .expect("certified");
        }
    }

    #[test]
    fn a_secret_whose_key_does_not_match_is_unusable() {
        let (cert, _) = Authority::generate(now()).expect("root");
        let (_, other_key) = Authority::generate(now()).expect("root");
        let err =
            Authority::from_pem("Secret t/ca", &cert, &other_key, None).expect_err("mismatch");
        assert!(err.to_string().contains("tls.key"), "{err}");
        assert!(!err.to_string().contains("PRIVATE"), "{err}");
        let leaf_key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["x".into()])
            .expect("params")
            .self_signed(&leaf_key)
            .expect("leaf");
        let err = Authority::from_pem("Secret t/ca", &leaf.pem(), &leaf_key.serialize_pem(), None)
            .expect_err("not a CA");
        assert!(err.to_string().contains("not a CA"), "{err}");
    }

    #[test]
    fn an_intermediate_appends_its_chain_and_publishes_the_root() {
        let root_key = KeyPair::generate().expect("key");
        let mut root_params = CertificateParams::default();
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params
            .distinguished_name
            .push(DnType::CommonName, "root");
        let root = root_params.self_signed(&root_key).expect("root");
        let int_key = KeyPair::generate().expect("key");
        let mut int_params = CertificateParams::default();
        int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        int_params
            .distinguished_name
            .push(DnType::CommonName, "intermediate");
        let int = int_params
            .signed_by(&int_key, &root, &root_key)
            .expect("intermediate");
        let ca = Authority::from_pem(
            "Secret t/ca",
            &int.pem(),
            &int_key.serialize_pem(),
            Some(&root.pem()),
        )
        .expect("loads");
        assert_eq!(ca.bundle_pem().trim(), root.pem().trim());
        let issued = ca
            .issue(
                csr(&KeyPair::generate().expect("key"), &[]).as_bytes(),
                "spiffe://td/ns/a/sa/b",
                now(),
                DEFAULT_LIFETIME,
            )
            .expect("issued");
        let blocks = pem::parse_many(&issued.chain_pem).expect("pem");
        assert_eq!(blocks.len(), 2, "leaf then intermediate");
        let (_, leaf) = x509_parser::parse_x509_certificate(blocks[0].contents()).expect("leaf");
        let (_, inter) = x509_parser::parse_x509_certificate(blocks[1].contents()).expect("int");
        leaf.verify_signature(Some(inter.public_key()))
            .expect("signed by the intermediate");
        assert_eq!(leaf.issuer(), inter.subject());
    }
}
