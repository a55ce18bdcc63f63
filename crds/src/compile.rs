//! `compile`: a pure function from a [`Snapshot`] to a [`RoutingTable`] plus diagnostics.
//!
//! # Guarantees
//!
//! - **Pure and deterministic**: no clock, no I/O, no randomness; the same set of objects gives
//!   the same [`Compiled`] whatever the order of the input vectors (inputs are sorted by
//!   namespace/name first; outputs are sorted by id; diagnostics are sorted).
//! - **A bad object is left out and reported; the rest compiles.** References are followed in
//!   dependency order (ApiPolicy → Product → Plan → Subscription), and an object whose reference
//!   is missing (`*NotFound`) or did not compile (`*NotReady`) is left out too: it fails closed,
//!   so nothing is ever served without the policy or plan it was written with.
//! - **Every CEL rule and schema limit of the CRDs is re-checked**, because standalone mode has no
//!   API server to enforce them.
//! - **Keys leave the compiler only as [`key_digest`](crate::table::key_digest)s**, and no
//!   diagnostic message ever contains key material.
//! - **Conflicts have one winner**: two Products serving the same host/path/method, or two
//!   Subscriptions with the same key, are resolved in favour of the older object
//!   (`metadata.creationTimestamp`; objects without one count as newest; ties by namespace/name).
//!
//! Not checked here: expiry. An already-expired Subscription compiles (with its `expiresAt`), the
//! proxy answers 403, and the compile stays independent of the clock.

mod backend_tls;
mod cors;
mod last_good;
mod plans;
mod policies;
mod products;
mod secrets;
mod subscriptions;
mod validation;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

pub use last_good::{compile_keeping, Kept, LastGood};
// Defined in a leaf module so that `gateway/` can use it without importing `compile`.
pub use crate::namespace::DEFAULT_NAMESPACE;

use crate::diagnostics::{Diagnostic, ObjectRef, Severity};
use crate::policy::PolicyAncestorStatus;
use crate::reasons;
use crate::secret_data::secret_value;
use crate::snapshot::{ServiceEndpoints, Snapshot};
use crate::table::{ObjectId, RoutingTable};

/// Keys shorter than this many characters are rejected as [`reasons::WEAK_KEY`].
pub const MIN_KEY_CHARS: usize = 16;

/// The result of one compile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Compiled {
    /// What proxies enforce.
    pub table: RoutingTable,
    /// Findings per object, sorted.
    pub diagnostics: Vec<Diagnostic>,
    /// Per ApiPolicy with `targetRefs` (`namespace/name`): its `status.ancestors`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policy_ancestors: BTreeMap<String, Vec<PolicyAncestorStatus>>,
}

impl Compiled {
    /// Whether any diagnostic is an error (some object was left out).
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// Compile a snapshot. Deterministic and independent of input order.
pub fn compile(snapshot: &Snapshot) -> Compiled {
    // Products that target HTTPRoutes get their routes and backend from them first.
    let translation = crate::gateway::translate(&snapshot.gateway.inputs(&snapshot.secrets));
    let resolved = crate::gateway::targets::resolve(snapshot, &translation);
    // ApiPolicies attach through their targetRefs to Products, implicit ones included.
    let attachment = crate::gateway::attach::attach(snapshot, &translation);
    let snapshot: &Snapshot = &resolved.snapshot;
    let mut out = resolved.diagnostics;
    out.extend(attachment.diagnostics);
    out.extend(translation.statuses.diagnostics());
    let rejected = Rejected::new(&snapshot.rejected);

    let policy_inputs = unique_objects("ApiPolicy", &snapshot.policies, |p| &p.metadata, &mut out);
    let product_inputs = unique_objects("Product", &snapshot.products, |p| &p.metadata, &mut out);
    let plan_inputs = unique_objects("Plan", &snapshot.plans, |p| &p.metadata, &mut out);
    let sub_inputs = unique_objects(
        "Subscription",
        &snapshot.subscriptions,
        |s| &s.metadata,
        &mut out,
    );
    let secret_inputs = unique_objects("Secret", &snapshot.secrets, |s| &s.metadata, &mut out);

    let secrets = secrets::Secrets::new(&secret_inputs, &rejected);

    let policies = policies::compile(
        &policy_inputs,
        &product_inputs,
        &attachment.by_product,
        &secrets,
        &resolved.gateway_cors,
        &mut out,
    );
    let products = products::compile(
        &product_inputs,
        &policies,
        &attachment.by_product,
        &secrets,
        &rejected,
        &resolved.bindings,
        &mut out,
    );
    let policy_ancestors = ancestors(attachment.ancestors, &policies);
    let plans = plans::compile(&plan_inputs, &products, &rejected, &mut out);
    let (subscriptions, unavailable) =
        subscriptions::compile(&sub_inputs, &plans, &secrets, &rejected, &mut out);

    out.sort();
    out.dedup();
    let mut products = products.into_entries(|e| &e.id);
    // Only implicit Products without a spec backend (compiled as `unresolved`) are in the map.
    for p in &mut products {
        if let Some(backend) = resolved.backends.get(&p.id) {
            p.backend = backend.clone();
        }
        if let Some(host) = resolved.host_rewrites.get(&p.id) {
            p.host_rewrite = Some(host.clone());
        }
    }
    resolve_endpoints(&mut products, &snapshot.endpoints);
    let mut policies = policies.into_entries(|e| &e.id);
    for p in &mut policies {
        if let (Some(tls), Some(sans)) = (&mut p.backend_tls, resolved.backend_tls_sans.get(&p.id))
        {
            tls.subject_alt_names.clone_from(sans);
        }
    }
    let listener_certificates = listener_certificates(&translation, &snapshot.secrets);
    let gateways = translation
        .addressed
        .iter()
        .map(|g| crate::table::GatewayEntry {
            id: format!("{}/{}", g.namespace, g.name),
            address: g.address,
            ports: g
                .ports
                .iter()
                .map(|&(port, tls)| crate::table::GatewayPortEntry { port, tls })
                .collect(),
        })
        .collect();
    Compiled {
        table: RoutingTable {
            products,
            plans: plans.into_entries(|e| &e.id),
            subscriptions: subscriptions.into_entries(|e| &e.id),
            policies,
            unavailable,
            listener_certificates,
            gateways,
        },
        diagnostics: out,
        policy_ancestors,
    }
}

/// The policies' `status.ancestors`: the attachment's, except that a policy that does not
/// compile is accepted nowhere (what it targets is left out until it does).
fn ancestors(
    mut by_policy: BTreeMap<String, Vec<PolicyAncestorStatus>>,
    policies: &Outcomes<crate::table::PolicyEntry>,
) -> BTreeMap<String, Vec<PolicyAncestorStatus>> {
    for (id, list) in &mut by_policy {
        let (ns, name) = id.split_once('/').unwrap_or((DEFAULT_NAMESPACE, id));
        let why = match policies.lookup(ns, name) {
            Lookup::Ready(_) => continue,
            Lookup::NotReady(reason) => format!("the policy does not compile ({reason})"),
            Lookup::NotFound => "the policy could not be read".to_string(),
        };
        for entry in list {
            for c in &mut entry.conditions {
                c.status = "False".to_string();
                c.reason = "Invalid".to_string();
                c.message = format!(
                    "{why}: see its Ready condition; what it targets is not served until it does"
                );
            }
        }
    }
    by_policy
}

/// The PEM of each valid HTTPS listener's certificate Secret (the translation checked that
/// `tls.crt` and `tls.key` hold PEM, so a listener is left out only if its Secret went away
/// between the two reads, which a snapshot does not allow).
fn listener_certificates(
    translation: &crate::gateway::Translation,
    secrets: &[k8s_openapi::api::core::v1::Secret],
) -> Vec<crate::table::ListenerCertificateEntry> {
    let mut out: Vec<_> = translation
        .certificates
        .iter()
        .filter_map(|c| {
            let secret = secrets.iter().find(|s| {
                s.metadata.name.as_deref() == Some(c.secret_name.as_str())
                    && s.metadata
                        .namespace
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(DEFAULT_NAMESPACE)
                        == c.secret_namespace
            })?;
            let pem =
                |key| secret_value(secret, key).map(|b| String::from_utf8_lossy(b).into_owned());
            Some(crate::table::ListenerCertificateEntry {
                id: format!("{}/{}/{}", c.namespace, c.gateway, c.listener),
                hostname: c.hostname.clone(),
                port: c.port,
                cert_pem: pem("tls.crt")?,
                key_pem: crate::table::SecretPem(pem("tls.key")?),
            })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Fill the ready endpoints of Service backends (sorted, deduplicated, so the table does not
/// change when EndpointSlices are merely reordered).
fn resolve_endpoints(products: &mut [crate::table::ProductEntry], endpoints: &[ServiceEndpoints]) {
    if endpoints.is_empty() {
        return;
    }
    let index: BTreeMap<(&str, &str, u16), &ServiceEndpoints> = endpoints
        .iter()
        .map(|e| ((e.namespace.as_str(), e.service.as_str(), e.port), e))
        .collect();
    for p in products {
        fill_endpoints(&mut p.backend, &index);
    }
}

/// Fill one target's endpoints (each member's, for a split).
fn fill_endpoints(
    target: &mut crate::table::BackendTarget,
    index: &BTreeMap<(&str, &str, u16), &ServiceEndpoints>,
) {
    match target {
        crate::table::BackendTarget::Service {
            namespace,
            name,
            port,
            endpoints,
            workload,
        } => {
            if let Some(found) = index.get(&(namespace.as_str(), name.as_str(), *port)) {
                let mut addresses = found.addresses.clone();
                addresses.sort();
                addresses.dedup();
                *endpoints = addresses;
                workload.clone_from(&found.workload);
            }
        }
        crate::table::BackendTarget::Split { backends } => {
            for member in backends {
                fill_endpoints(&mut member.target, index);
            }
        }
        _ => {}
    }
}

/// An input object with its identity resolved (namespace defaulted).
pub(crate) struct Input<'a, T> {
    /// Kind, namespace and name.
    pub object: ObjectRef,
    /// The object itself.
    pub value: &'a T,
    /// Its metadata (for the age used to settle conflicts).
    pub meta: &'a ObjectMeta,
}

impl<T> Input<'_, T> {
    /// `namespace/name`, the id used in the table.
    pub fn id(&self) -> ObjectId {
        object_id(&self.object.namespace, &self.object.name)
    }

    /// Sort key putting older objects first (see the module's guarantees). Ties are left to
    /// a *stable* sort of inputs already in (namespace, name) order, which saves comparing names.
    pub fn age_key(&self) -> (bool, Option<&Time>) {
        let created = self.meta.creation_timestamp.as_ref();
        (created.is_none(), created)
    }
}

/// `namespace/name`.
pub(crate) fn object_id(namespace: &str, name: &str) -> ObjectId {
    format!("{namespace}/{name}")
}

/// Resolve identities, sort by (namespace, name), and settle duplicates.
///
/// A watch cache never holds two objects with one name, but a hand-built snapshot can; keeping the
/// one whose canonical JSON sorts first keeps the outcome independent of input order.
fn unique_objects<'a, T: Serialize>(
    kind: &str,
    items: &'a [T],
    meta: impl Fn(&T) -> &ObjectMeta,
    out: &mut Vec<Diagnostic>,
) -> Vec<Input<'a, T>> {
    let mut inputs: Vec<Input<'a, T>> = Vec::with_capacity(items.len());
    for value in items {
        let m = meta(value);
        let object = ObjectRef {
            kind: kind.to_string(),
            namespace: m
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            name: m.name.clone().unwrap_or_default(),
        };
        if object.name.is_empty() {
            out.push(Diagnostic {
                object,
                severity: Severity::Error,
                field: "metadata.name".into(),
                reason: reasons::INVALID_FIELD.into(),
                message: "the object has no name; set metadata.name".into(),
                file: None,
            });
            continue;
        }
        inputs.push(Input {
            object,
            value,
            meta: m,
        });
    }
    // One kind per call: compare (namespace, name) only. Stable, so a caller can rely on it.
    inputs.sort_by(|a, b| {
        (&a.object.namespace, &a.object.name).cmp(&(&b.object.namespace, &b.object.name))
    });

    let mut unique: Vec<Input<'a, T>> = Vec::with_capacity(inputs.len());
    let mut iter = inputs.into_iter().peekable();
    while let Some(first) = iter.next() {
        let mut group = vec![first];
        while let Some(next) = iter.next_if(|n| n.object == group[0].object) {
            group.push(next);
        }
        if group.len() > 1 {
            group.sort_by_cached_key(|i| serde_json::to_string(i.value).unwrap_or_default());
        }
        let mut group = group.into_iter();
        if let Some(kept) = group.next() {
            for dup in group {
                out.push(Diagnostic {
                    object: dup.object,
                    severity: Severity::Error,
                    field: "metadata.name".into(),
                    reason: reasons::DUPLICATE_OBJECT.into(),
                    message: format!(
                        "{} is defined more than once; only one definition is used. Remove or rename the others",
                        kept.object
                    ),
                    file: None,
                });
            }
            unique.push(kept);
        }
    }
    unique
}

/// Objects that exist but could not be read (standalone manifest errors): references to them are
/// reported as `*NotReady`, pointing at the real cause, rather than `*NotFound`.
pub(crate) struct Rejected<'a> {
    set: std::collections::BTreeSet<(&'a str, &'a str, &'a str)>,
}

impl<'a> Rejected<'a> {
    fn new(list: &'a [ObjectRef]) -> Self {
        Self {
            set: list
                .iter()
                .map(|o| (o.kind.as_str(), o.namespace.as_str(), o.name.as_str()))
                .collect(),
        }
    }

    /// Whether `kind namespace/name` exists but could not be read.
    pub fn contains(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.set.contains(&(kind, namespace, name))
    }
}

/// What became of every object of one kind, by namespace then name (nested so that lookups
/// borrow `&str` instead of allocating a key: there is one per Subscription).
pub(crate) struct Outcomes<T> {
    map: BTreeMap<String, BTreeMap<String, Outcome<T>>>,
}

/// One object's fate.
pub(crate) enum Outcome<T> {
    /// It compiled.
    Compiled(T),
    /// It was left out; the reason of its first error.
    Failed(String),
}

/// The result of following a reference.
pub(crate) enum Lookup<'a, T> {
    /// The target compiled.
    Ready(&'a T),
    /// The target exists but was left out, for this reason.
    NotReady(&'a str),
    /// No such object.
    NotFound,
}

impl<T> Default for Outcomes<T> {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
        }
    }
}

impl<T> Outcomes<T> {
    /// Record an object's fate.
    pub fn insert(&mut self, object: &ObjectRef, outcome: Outcome<T>) {
        let names = match self.map.get_mut(&object.namespace) {
            Some(names) => names,
            None => self.map.entry(object.namespace.clone()).or_default(),
        };
        names.insert(object.name.clone(), outcome);
    }

    /// Follow a reference to `namespace/name`.
    pub fn lookup(&self, namespace: &str, name: &str) -> Lookup<'_, T> {
        match self.map.get(namespace).and_then(|names| names.get(name)) {
            Some(Outcome::Compiled(t)) => Lookup::Ready(t),
            Some(Outcome::Failed(reason)) => Lookup::NotReady(reason),
            None => Lookup::NotFound,
        }
    }

    /// Names of the objects of this kind in a namespace (for "did you mean").
    pub fn names_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.map
            .get(namespace)
            .into_iter()
            .flat_map(|names| names.keys().map(String::as_str))
    }

    /// The compiled entries, sorted by id.
    fn into_entries(self, id: impl Fn(&T) -> &ObjectId) -> Vec<T> {
        let mut entries: Vec<T> = self
            .map
            .into_values()
            .flat_map(BTreeMap::into_values)
            .filter_map(|o| match o {
                Outcome::Compiled(t) => Some(t),
                Outcome::Failed(_) => None,
            })
            .collect();
        // `ns/name` strings do not sort like (ns, name) pairs ('-' < '/'), and ids are the contract.
        entries.sort_by(|a, b| id(a).cmp(id(b)));
        entries
    }
}

/// Collects the findings about one object and remembers whether it must be left out.
pub(crate) struct Report<'a> {
    object: &'a ObjectRef,
    first_error: Option<String>,
    out: &'a mut Vec<Diagnostic>,
}

impl<'a> Report<'a> {
    /// Start reporting about `object`.
    pub fn new(object: &'a ObjectRef, out: &'a mut Vec<Diagnostic>) -> Self {
        Self {
            object,
            first_error: None,
            out,
        }
    }

    /// The object is wrong in `field` and will be left out.
    pub fn error(&mut self, field: impl Into<String>, reason: &str, message: impl Into<String>) {
        if self.first_error.is_none() {
            self.first_error = Some(reason.to_string());
        }
        self.push(Severity::Error, field.into(), reason, message.into());
    }

    /// Something deserves a look; the object still compiles.
    pub fn warning(&mut self, field: impl Into<String>, reason: &str, message: impl Into<String>) {
        self.push(Severity::Warning, field.into(), reason, message.into());
    }

    fn push(&mut self, severity: Severity, field: String, reason: &str, message: String) {
        self.out.push(Diagnostic {
            object: self.object.clone(),
            severity,
            field,
            reason: reason.to_string(),
            message,
            file: None,
        });
    }

    /// `Compiled(entry)` when no error was reported, else `Failed(first reason)`.
    pub fn finish<T>(self, entry: Option<T>) -> Outcome<T> {
        match (self.first_error, entry) {
            (None, Some(entry)) => Outcome::Compiled(entry),
            (Some(reason), _) => Outcome::Failed(reason),
            // Callers only build no entry after an error; fail closed if one ever does.
            (None, None) => Outcome::Failed(reasons::INVALID_FIELD.to_string()),
        }
    }

    /// Whether an error has been reported.
    pub fn has_errors(&self) -> bool {
        self.first_error.is_some()
    }
}

/// ", did you mean `x`?" when a close name exists, else "".
pub(crate) fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    crate::spelling::did_you_mean(word, candidates)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
