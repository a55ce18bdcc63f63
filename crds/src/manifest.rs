//! Reading Tollgate objects from YAML manifests (standalone mode).
//!
//! Standalone mode has no API server, so this module does what `kubectl apply` and the API server
//! would: it splits multi-document files, dispatches on `apiVersion`/`kind`, defaults the
//! namespace, and rejects what the CRD schema would reject. It is stricter than a cluster in one
//! way, on purpose: the API server silently prunes unknown fields, so a typo such as
//! `rateLimt:` would quietly remove a rate limit; here it is reported with file, object and field.
//!
//! # Policy
//!
//! - A document that cannot be read (bad YAML, wrong type, missing required field, bad enum value,
//!   bad base64) is an [`Error`](Severity::Error) naming the file, the document and serde's
//!   field path; the other documents still load.
//! - **An unknown field makes the whole object an error and leaves it out.** Loading it without
//!   the field could serve something looser than the author meant (no rate limit, no policy);
//!   leaving it out is the safe choice, and in the proxy the previous table keeps serving. The
//!   object is listed in [`Snapshot::rejected`], so what references it is reported `*NotReady`
//!   (pointing here) rather than `*NotFound`.
//! - Gateway API kinds (`gateway.networking.k8s.io/v1` GatewayClass, Gateway, HTTPRoute,
//!   ReferenceGrant, BackendTLSPolicy) and `v1` Service, Namespace and ConfigMap are read too, so
//!   Products with `targetRefs` can be served from the same files as in a cluster
//!   ([`crate::gateway`]).
//! - Other kinds than the four Tollgate kinds, those and `v1` Secret are skipped with a
//!   [`Warning`](Severity::Warning); a `tollgate.dev` kind or version this build does not know is
//!   an error (it was clearly meant for Tollgate).
//! - The same kind/namespace/name twice: the later definition (in `add_file` order) is an error
//!   and is left out; the first is kept.
//!
//! - **Reading is bounded** ([`Limits`]): a file larger than `max_file_bytes`, or a document nesting
//!   deeper than `max_depth`, is a [`MANIFEST_LIMIT_EXCEEDED`](reasons::MANIFEST_LIMIT_EXCEEDED)
//!   error naming the file and the limit. The YAML parser's cost grows with the nesting depth on
//!   every token (a 200 KB file of `[[[[…` took seconds to refuse) and its memory with the file
//!   size, so both are checked before the text reaches it; the depth by a linear pre-scan that
//!   can only refuse documents that really are deeper (see `nesting`).
//!
//! No I/O happens here: the caller reads the files and calls [`ManifestSet::add_file`] once per
//! file, in sorted file-name order, so that "the later one" is well defined. A caller reading
//! from disk should check the size from the file's metadata first ([`Limits::check_size`]) and
//! report a file that is too large with [`ManifestSet::add_limit_error`], so it never reads it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResourceExt;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::compile::{compile, Compiled, DEFAULT_NAMESPACE};
use crate::diagnostics::{Diagnostic, ObjectRef, Severity};
use crate::gateway::{BackendTlsPolicy, Gateway, GatewayClass, HttpRoute, ReferenceGrant};
use crate::snapshot::Snapshot;
use crate::spelling::did_you_mean;
use crate::{reasons, ApiPolicy, Plan, Product, Subscription};

mod nesting;

/// Default bound on one manifest file's size: 4 MiB (a cluster stores at most about 1.5 MiB per
/// object, so no real manifest comes close).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Default bound on nesting (mappings, sequences and brackets inside each other). Tollgate's own
/// kinds nest fewer than 10 levels; `serde_yaml_ng` refuses past 128 anyway, but only after
/// parsing the whole document.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Bounds on what reading one manifest file may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file accepted, in bytes.
    pub max_file_bytes: u64,
    /// Deepest nesting accepted in any document.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

impl Limits {
    /// Refuse `file` if `len` bytes is over [`max_file_bytes`](Self::max_file_bytes).
    pub fn check_size(&self, file: &str, len: u64) -> Result<(), LimitError> {
        if len > self.max_file_bytes {
            return Err(LimitError::TooLarge {
                file: file.to_string(),
                len,
                limit: self.max_file_bytes,
            });
        }
        Ok(())
    }
}

/// A manifest file over one of the [`Limits`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The file is larger than `max_file_bytes`.
    #[error("{file}: {}", self.detail())]
    TooLarge {
        /// File name.
        file: String,
        /// Its size in bytes (at least; it may have been cut off there).
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A document nests deeper than `max_depth`.
    #[error("{file}: {}", self.detail())]
    TooDeep {
        /// File name.
        file: String,
        /// 1-based document number in the file.
        document: usize,
        /// 1-based line of the file where the limit was passed.
        line: usize,
        /// The limit.
        limit: usize,
    },
}

impl LimitError {
    /// The file concerned.
    pub fn file(&self) -> &str {
        match self {
            LimitError::TooLarge { file, .. } | LimitError::TooDeep { file, .. } => file,
        }
    }

    /// The message without the file name (diagnostics carry the file separately).
    fn detail(&self) -> String {
        match self {
            LimitError::TooLarge { len, limit, .. } => format!(
                "{len} bytes, over the limit of {limit} bytes per manifest file; split it into \
                 smaller files (or raise --max-manifest-bytes). It was not read"
            ),
            LimitError::TooDeep {
                document,
                line,
                limit,
                ..
            } => format!(
                "document {document} nests deeper than {limit} levels (mappings, sequences or \
                 brackets inside each other) at line {line}; no Tollgate object needs that many \
                 (or raise --max-manifest-depth)"
            ),
        }
    }
}

/// `apiVersion` of the Tollgate kinds.
const TOLLGATE_API_VERSION: &str = "tollgate.dev/v1alpha1";
/// The kinds read from manifests besides Secret.
const TOLLGATE_KINDS: [&str; 4] = ["Product", "Plan", "Subscription", "ApiPolicy"];
/// `apiVersion` of the Gateway API kinds read.
const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// The Gateway API kinds read (standard channel, v1).
const GATEWAY_KINDS: [&str; 5] = [
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "ReferenceGrant",
    "BackendTLSPolicy",
];
/// Fields of `metadata` (ObjectMeta), for "did you mean".
const OBJECT_META_FIELDS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];
/// Top-level fields of a Secret.
const SECRET_FIELDS: &[&str] = &[
    "apiVersion",
    "data",
    "immutable",
    "kind",
    "metadata",
    "stringData",
    "type",
];
/// Top-level fields of a custom resource.
const CUSTOM_RESOURCE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// Objects read from a set of files, and the problems found reading them.
#[derive(Clone, Debug, Default)]
pub struct ManifestSet {
    /// The objects that parsed (namespace defaulted), plus the identities of those that did not.
    pub snapshot: Snapshot,
    /// Parse errors and unknown fields, with file, object and field, in reading order.
    pub problems: Vec<Diagnostic>,
    /// Where each object was defined: `(file, document number)`.
    sources: BTreeMap<ObjectRef, (String, usize)>,
}

impl ManifestSet {
    /// Add every document of one (multi-document) YAML file.
    ///
    /// Never fails: every problem becomes a [`Diagnostic`] in [`problems`](Self::problems).
    /// Reading is bounded by the default [`Limits`].
    pub fn add_file(&mut self, file: &str, text: &str) {
        self.add_file_within(file, text, &Limits::default());
    }

    /// [`add_file`](Self::add_file) within `limits`: a file over the size limit is not parsed at
    /// all; a document nesting deeper than the depth limit is reported and not parsed (the other
    /// documents still are).
    pub fn add_file_within(&mut self, file: &str, text: &str, limits: &Limits) {
        if let Err(e) = limits.check_size(file, text.len() as u64) {
            self.add_limit_error(&e);
            return;
        }
        for doc in split_documents(text) {
            if let Some(line) = nesting::nesting_exceeds(&doc.text, limits.max_depth) {
                self.add_limit_error(&LimitError::TooDeep {
                    file: file.to_string(),
                    document: doc.number,
                    line: doc.offset + line + 1,
                    limit: limits.max_depth,
                });
                continue;
            }
            self.add_document(file, &doc);
        }
    }

    /// Add the objects and problems of `file`, a set holding one file read on its own, as if
    /// that file had been added here with [`add_file`](Self::add_file): an object already
    /// defined (by an earlier file) is a `DuplicateObject` error and left out, with its own
    /// problems. Reading each file on its own lets a caller keep what it needs per file (the
    /// proxy keeps the problems of files that failed, so it does not parse them again).
    pub fn merge(&mut self, file: ManifestSet) {
        let ManifestSet {
            snapshot: mut snap,
            mut problems,
            sources,
        } = file;
        let mut duplicates = std::collections::BTreeSet::new();
        let mut defined: Vec<(ObjectRef, (String, usize))> = sources.into_iter().collect();
        defined.sort_by_key(|(_, (_, doc))| *doc);
        for (object, (name, doc)) in defined {
            match self.sources.get(&object) {
                Some((first_file, first_doc)) => {
                    self.problems
                        .push(duplicate(&object, &name, first_file, *first_doc));
                    duplicates.insert(object);
                }
                None => {
                    self.sources.insert(object, (name, doc));
                }
            }
        }
        if !duplicates.is_empty() {
            // Rare: only then is each object's identity rebuilt.
            let keep = |kind: &str, m: &ObjectMeta| {
                !duplicates.contains(&ObjectRef {
                    kind: kind.to_string(),
                    namespace: m.namespace.clone().unwrap_or_default(),
                    name: m.name.clone().unwrap_or_default(),
                })
            };
            snap.products.retain(|o| keep("Product", &o.metadata));
            snap.plans.retain(|o| keep("Plan", &o.metadata));
            snap.subscriptions
                .retain(|o| keep("Subscription", &o.metadata));
            snap.policies.retain(|o| keep("ApiPolicy", &o.metadata));
            snap.secrets.retain(|o| keep("Secret", &o.metadata));
            let gw = &mut snap.gateway;
            gw.gateway_classes.retain(|o| {
                // Cluster-scoped: identified without a namespace.
                !duplicates.contains(&ObjectRef {
                    kind: "GatewayClass".to_string(),
                    namespace: String::new(),
                    name: o.metadata.name.clone().unwrap_or_default(),
                })
            });
            gw.gateways.retain(|o| keep("Gateway", &o.metadata));
            gw.http_routes.retain(|o| keep("HTTPRoute", &o.metadata));
            gw.reference_grants
                .retain(|o| keep("ReferenceGrant", &o.metadata));
            gw.services.retain(|o| keep("Service", &o.metadata));
            gw.backend_tls_policies
                .retain(|o| keep("BackendTLSPolicy", &o.metadata));
            gw.config_maps.retain(|o| keep("ConfigMap", &o.metadata));
            gw.namespaces.retain(|o| {
                !duplicates.contains(&ObjectRef {
                    kind: "Namespace".to_string(),
                    namespace: String::new(),
                    name: o.metadata.name.clone().unwrap_or_default(),
                })
            });
            snap.rejected.retain(|r| !duplicates.contains(r));
            problems.retain(|d| !duplicates.contains(&d.object));
        }
        let into = &mut self.snapshot;
        into.products.append(&mut snap.products);
        into.plans.append(&mut snap.plans);
        into.subscriptions.append(&mut snap.subscriptions);
        into.policies.append(&mut snap.policies);
        into.secrets.append(&mut snap.secrets);
        // Destructured, so a kind added to the Gateway API objects cannot be forgotten here.
        let crate::gateway::GatewayObjects {
            gateway_classes,
            gateways,
            http_routes,
            reference_grants,
            services,
            namespaces,
            backend_tls_policies,
            config_maps,
            // Not read from files: set by the caller after reading.
            address_pool: _,
        } = &mut into.gateway;
        let gw = &mut snap.gateway;
        gateway_classes.append(&mut gw.gateway_classes);
        gateways.append(&mut gw.gateways);
        http_routes.append(&mut gw.http_routes);
        reference_grants.append(&mut gw.reference_grants);
        services.append(&mut gw.services);
        namespaces.append(&mut gw.namespaces);
        backend_tls_policies.append(&mut gw.backend_tls_policies);
        config_maps.append(&mut gw.config_maps);
        into.rejected.append(&mut snap.rejected);
        self.problems.append(&mut problems);
    }

    /// Report a file over a limit (e.g. found too large from its metadata, and so never read).
    pub fn add_limit_error(&mut self, e: &LimitError) {
        let name = match e {
            LimitError::TooLarge { .. } => "(whole file)".to_string(),
            LimitError::TooDeep { document, .. } => document.to_string(),
        };
        self.problems.push(Diagnostic {
            object: ObjectRef {
                kind: "Document".into(),
                namespace: String::new(),
                name,
            },
            severity: Severity::Error,
            field: String::new(),
            reason: reasons::MANIFEST_LIMIT_EXCEEDED.to_string(),
            message: e.detail(),
            file: Some(e.file().to_string()),
        });
    }

    /// Compile what was read: the table, and every diagnostic (reading problems first merged with
    /// the compiler's), each with the file its object came from, sorted.
    pub fn compile(&self) -> Compiled {
        let mut compiled = compile(&self.snapshot);
        for d in &mut compiled.diagnostics {
            if d.file.is_none() {
                d.file = self.source_of(&d.object).map(str::to_string);
            }
        }
        compiled.diagnostics.extend(self.problems.iter().cloned());
        compiled.diagnostics.sort();
        compiled.diagnostics.dedup();
        compiled
    }

    /// [`compile_keeping`](crate::compile::compile_keeping) on these manifests (file names added,
    /// manifest problems merged in, as [`compile`](Self::compile) does): objects whose new
    /// version fails are served in their version from `last_good`.
    pub fn compile_keeping(&self, last_good: &crate::compile::LastGood) -> crate::compile::Kept {
        let mut kept = crate::compile::compile_keeping(&self.snapshot, last_good);
        let compiled = &mut kept.compiled;
        for d in &mut compiled.diagnostics {
            if d.file.is_none() {
                d.file = self.source_of(&d.object).map(str::to_string);
            }
        }
        compiled.diagnostics.extend(self.problems.iter().cloned());
        compiled.diagnostics.sort();
        compiled.diagnostics.dedup();
        kept
    }

    /// The file an object was read from.
    pub fn source_of(&self, object: &ObjectRef) -> Option<&str> {
        self.sources.get(object).map(|(file, _)| file.as_str())
    }

    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|d| d.severity == Severity::Error)
    }

    fn add_document(&mut self, file: &str, doc: &Document) {
        let mut ctx = DocContext {
            file,
            doc,
            object: ObjectRef {
                kind: "Document".into(),
                namespace: String::new(),
                name: doc.number.to_string(),
            },
            problems: &mut self.problems,
        };

        // A small header struct (not a full `Value` tree) keeps reading large directories cheap;
        // the slower `Value` parse only runs to explain a failure.
        let header: Header = match serde_yaml_ng::from_str::<Option<Header>>(&doc.text) {
            Ok(Some(header)) => header,
            // Empty documents (`---` at the end, comment-only files) are normal in manifests.
            Ok(None) => return,
            Err(e) => {
                let (reason, message) = match serde_yaml_ng::from_str::<Value>(&doc.text) {
                    Err(_) => (reasons::INVALID_YAML, doc.in_file_lines(&e.to_string())),
                    Ok(value) if !value.is_mapping() => (
                        reasons::INVALID_MANIFEST,
                        "not a mapping; each document must be a Kubernetes object with apiVersion, kind and metadata".to_string(),
                    ),
                    Ok(_) => (
                        reasons::INVALID_MANIFEST,
                        format!("apiVersion, kind, metadata.name and metadata.namespace must be strings ({})", doc.in_file_lines(&e.to_string())),
                    ),
                };
                ctx.error("", reason, format!("{}: {message}", doc.describe()));
                return;
            }
        };
        let api_version = header.api_version;
        let kind = header.kind;
        let metadata = header.metadata.unwrap_or_default();
        let name = metadata.name;
        let namespace = metadata
            .namespace
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());

        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            ctx.error(
                "",
                reasons::INVALID_MANIFEST,
                format!("{} has no apiVersion or no kind; every object needs both (e.g. apiVersion: tollgate.dev/v1alpha1, kind: Product)", doc.describe()),
            );
            return;
        };
        // Name the object as well as it can be read, so even an ignored document is findable.
        ctx.object = match name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => ObjectRef {
                kind: kind.clone(),
                namespace: namespace.clone(),
                name: n.to_string(),
            },
            None => ObjectRef {
                kind: kind.clone(),
                namespace: String::new(),
                name: format!("(document {})", doc.number),
            },
        };

        let is_tollgate_kind = TOLLGATE_KINDS.contains(&kind.as_str());
        let known = (api_version == TOLLGATE_API_VERSION && is_tollgate_kind)
            || (api_version == GATEWAY_API_VERSION && GATEWAY_KINDS.contains(&kind.as_str()))
            || (api_version == "v1"
                && matches!(
                    kind.as_str(),
                    "Secret" | "Service" | "Namespace" | "ConfigMap"
                ));
        if !known {
            let group = api_version.split('/').next().unwrap_or_default();
            if group == "tollgate.dev" || is_tollgate_kind || kind == "Secret" {
                let hint = if is_tollgate_kind {
                    format!("use apiVersion: {TOLLGATE_API_VERSION}")
                } else if kind == "Secret" {
                    "use apiVersion: v1".to_string()
                } else {
                    let close = did_you_mean(&kind, TOLLGATE_KINDS)
                        .map(|k| format!("did you mean {k}? "))
                        .unwrap_or_default();
                    format!("{close}Tollgate kinds are Product, Plan, Subscription and ApiPolicy")
                };
                ctx.error(
                    "kind",
                    reasons::UNKNOWN_KIND,
                    format!(
                        "{} is {api_version} {kind}, which this version does not read; {hint}",
                        doc.describe()
                    ),
                );
            } else {
                ctx.warning(
                    "kind",
                    reasons::IGNORED_KIND,
                    format!(
                        "{} is {api_version} {kind}; standalone mode reads only {TOLLGATE_API_VERSION} kinds, {GATEWAY_API_VERSION} {gateway_kinds}, v1 Secrets, Services, Namespaces and ConfigMaps, so it is ignored",
                        doc.describe(),
                        gateway_kinds = GATEWAY_KINDS.join(", "),
                    ),
                );
            }
            return;
        }

        let Some(name) = name.filter(|n| !n.is_empty()) else {
            ctx.error(
                "metadata.name",
                reasons::INVALID_MANIFEST,
                format!(
                    "{} has no metadata.name; give the object a name",
                    doc.describe()
                ),
            );
            return;
        };
        ctx.object = ObjectRef {
            kind: kind.clone(),
            // GatewayClasses and Namespaces are cluster-scoped.
            namespace: if kind == "GatewayClass" || kind == "Namespace" {
                String::new()
            } else {
                namespace
            },
            name,
        };

        if let Some((first_file, first_doc)) = self.sources.get(&ctx.object) {
            let d = duplicate(&ctx.object, file, first_file, *first_doc);
            ctx.problems.push(d);
            return;
        }
        self.sources
            .insert(ctx.object.clone(), (file.to_string(), doc.number));

        let loaded = match kind.as_str() {
            "Product" => ctx.read::<Product>().map(|mut o| {
                default_namespace(&mut o.metadata);
                self.snapshot.products.push(o)
            }),
            "Plan" => ctx.read::<Plan>().map(|mut o| {
                default_namespace(&mut o.metadata);
                self.snapshot.plans.push(o)
            }),
            "Subscription" => ctx.read::<Subscription>().map(|mut o| {
                default_namespace(&mut o.metadata);
                self.snapshot.subscriptions.push(o)
            }),
            "ApiPolicy" => ctx.read::<ApiPolicy>().map(|mut o| {
                default_namespace(&mut o.metadata);
                self.snapshot.policies.push(o)
            }),
            "GatewayClass" => ctx
                .read::<GatewayClass>()
                .map(|o| self.snapshot.gateway.gateway_classes.push(o)),
            "Gateway" => ctx.read::<Gateway>().map(|mut o| {
                default_namespace(&mut o.metadata);
                self.snapshot.gateway.gateways.push(o)
            }),
            "HTTPRoute" => ctx.read::<HttpRoute>().map(|mut o| {
                default_namespace(&mut o.metadata);
                self.snapshot.gateway.http_routes.push(o)
            }),
            "ReferenceGrant" => ctx.read::<ReferenceGrant>().map(|mut o| {
                default_namespace(&mut o.metadata);
                self.snapshot.gateway.reference_grants.push(o)
            }),
            "Service" => ctx.read::<Service>().map(|mut o| {
                default_namespace(&mut o.metadata);
                self.snapshot.gateway.services.push(o)
            }),
            "BackendTLSPolicy" => ctx.read::<BackendTlsPolicy>().map(|mut o| {
                default_namespace(&mut o.metadata);
                self.snapshot.gateway.backend_tls_policies.push(o)
            }),
            "ConfigMap" => ctx.read::<ConfigMap>().map(|mut o| {
                default_namespace(&mut o.metadata);
                self.snapshot.gateway.config_maps.push(o)
            }),
            // Only their labels are read (allowedRoutes namespace selectors).
            "Namespace" => ctx
                .read::<Namespace>()
                .map(|o| self.snapshot.gateway.namespaces.push(o)),
            _ => ctx.read::<Secret>().map(|mut o| {
                default_namespace(&mut o.metadata);
                self.snapshot.secrets.push(o)
            }),
        };
        if loaded.is_none() {
            self.snapshot.rejected.push(ctx.object);
        }
    }
}

/// `object` (in `file`) was already defined in `first_file`.
fn duplicate(object: &ObjectRef, file: &str, first_file: &str, first_doc: usize) -> Diagnostic {
    Diagnostic {
        object: object.clone(),
        severity: Severity::Error,
        field: "metadata.name".to_string(),
        reason: reasons::DUPLICATE_OBJECT.to_string(),
        message: format!(
            "{object} is already defined in {first_file} (document {first_doc}); this later \
             definition is ignored. Remove or rename one of them"
        ),
        file: Some(file.to_string()),
    }
}

fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().unwrap_or_default().is_empty() {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_string());
    }
}

/// What is read first from every document, to decide what it is.
#[derive(serde::Deserialize)]
struct Header {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<HeaderMeta>,
}

/// The identifying part of `metadata`.
#[derive(serde::Deserialize, Default)]
struct HeaderMeta {
    name: Option<String>,
    namespace: Option<String>,
}

/// One YAML document of a file.
struct Document {
    /// 1-based position in the file (a leading comment-only preamble does not count).
    number: usize,
    /// 1-based line where it starts (its `---` marker, if any).
    line: usize,
    /// Lines of the file before `text`'s first line: added to parser line numbers.
    offset: usize,
    /// Its text.
    text: String,
}

impl Document {
    fn describe(&self) -> String {
        format!("document {} (line {})", self.number, self.line)
    }

    /// Rewrite the parser's "line N column M" (relative to `text`) into file line numbers.
    fn in_file_lines(&self, message: &str) -> String {
        shift_line_numbers(message, self.offset)
    }
}

/// Add `offset` to every number in "line N column" phrases.
///
/// Documents are parsed on their own (so one broken document cannot hide the others); rather than
/// padding each with blank lines (quadratic in the file size) the positions are shifted here.
fn shift_line_numbers(message: &str, offset: usize) -> String {
    const WORD: &str = "line ";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(WORD) {
        let (before, after) = rest.split_at(at + WORD.len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let tail = &after[digits..];
        match after[..digits].parse::<usize>() {
            Ok(n) if tail.starts_with(" column") => out.push_str(&(n + offset).to_string()),
            _ => out.push_str(&after[..digits]),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Split a multi-document YAML stream at `---` / `...` marker lines.
///
/// Splitting by hand (instead of iterating serde_yaml_ng's multi-document deserializer) keeps one
/// broken document from hiding the ones after it. YAML forbids these markers at column 0 inside
/// content, so splitting on them is exact.
fn split_documents(text: &str) -> Vec<Document> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    // (first line, offset, text) of the document being collected.
    let mut current: Option<(usize, usize, String)> = None;
    let mut preamble = String::new();
    let flush = |current: Option<(usize, usize, String)>, docs: &mut Vec<Document>| {
        if let Some((line, offset, text)) = current {
            docs.push(Document {
                number: docs.len() + 1,
                line,
                offset,
                text,
            });
        }
    };
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let marker = |m: &str| {
            line == m
                || line
                    .strip_prefix(m)
                    .is_some_and(|r| r.starts_with([' ', '\t']))
        };
        if marker("---") || line == "..." {
            if current.is_none() && has_content(&preamble) {
                // Content before the first marker is the first document.
                current = Some((1, 0, std::mem::take(&mut preamble)));
            }
            flush(current.take(), &mut docs);
            if line != "..." {
                // `--- {inline: doc}`: keep the rest of the line, in its column.
                current = Some((i + 1, i, format!("   {}\n", &line[3..])));
            }
        } else if let Some((_, _, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        } else {
            preamble.push_str(line);
            preamble.push('\n');
        }
    }
    if current.is_none() && has_content(&preamble) {
        current = Some((1, 0, preamble));
    }
    flush(current, &mut docs);
    docs
}

/// Whether text holds anything but blank lines and comments.
fn has_content(text: &str) -> bool {
    text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    })
}

/// What is being read, for diagnostics.
struct DocContext<'a> {
    file: &'a str,
    doc: &'a Document,
    object: ObjectRef,
    problems: &'a mut Vec<Diagnostic>,
}

impl DocContext<'_> {
    fn error(&mut self, field: &str, reason: &str, message: String) {
        self.push(Severity::Error, field, reason, message);
    }

    fn warning(&mut self, field: &str, reason: &str, message: String) {
        self.push(Severity::Warning, field, reason, message);
    }

    fn push(&mut self, severity: Severity, field: &str, reason: &str, message: String) {
        self.problems.push(Diagnostic {
            object: self.object.clone(),
            severity,
            field: field.to_string(),
            reason: reason.to_string(),
            message,
            file: Some(self.file.to_string()),
        });
    }

    /// Deserialize the document as `T`, reporting schema errors and every unknown field.
    /// `None` when the object must be left out.
    fn read<T: DeserializeOwned>(&mut self) -> Option<T> {
        let mut unknown: Vec<Vec<Segment>> = Vec::new();
        let de = serde_yaml_ng::Deserializer::from_str(&self.doc.text);
        let result: Result<T, _> = serde_ignored::deserialize(de, |path| {
            let segments = segments(&path);
            // The derived custom-resource types carry apiVersion/kind only in their type.
            let type_meta = matches!(segments.as_slice(), [Segment::Key(k)] if k == "apiVersion" || k == "kind");
            if !type_meta {
                unknown.push(segments);
            }
        });
        let value = match result {
            Ok(value) => Some(value),
            Err(e) => {
                let text = self.doc.in_file_lines(&e.to_string());
                let (field, message) = split_serde_path(&text);
                let message = if self.object.kind == "Secret" {
                    // serde quotes offending values ("invalid type: integer `123…`"); in a Secret
                    // that value may be a key, so only its position is given.
                    let at = e
                        .location()
                        .map(|l| {
                            let line = l.line() + self.doc.offset;
                            format!(" at line {line} column {}", l.column())
                        })
                        .unwrap_or_default();
                    format!(
                        "invalid value{at} (not shown: it may be a key); data values must be \
                         base64 text and stringData values plain strings"
                    )
                } else {
                    message.to_string()
                };
                let message = format!("{message}; {} is left out until this is fixed", self.object);
                self.error(field, reasons::INVALID_OBJECT, message);
                None
            }
        };
        // Unknown fields seen before a failure are reported too: a misspelled required field
        // (`nmae:`) shows up as "missing field `name`" plus "unknown field; did you mean name?".
        for path in &unknown {
            let Some((last, parent)) = path.split_last() else {
                continue;
            };
            let hint = match last {
                Segment::Key(key) => {
                    let siblings = known_fields(&self.object.kind, parent);
                    did_you_mean(key, siblings.iter().map(String::as_str))
                        .map(|s| format!("; did you mean {s}?"))
                }
                Segment::Index(_) => None,
            };
            let message = format!(
                "unknown field{} A cluster would drop it silently; here {} is left out until the \
                 field is fixed or removed",
                hint.unwrap_or_else(|| ".".to_string()),
                self.object
            );
            self.error(&render(path), reasons::UNKNOWN_FIELD, message);
        }
        value.filter(|_| unknown.is_empty())
    }
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut at = path;
    loop {
        match at {
            serde_ignored::Path::Root => break,
            serde_ignored::Path::Seq { parent, index } => {
                out.push(Segment::Index(*index));
                at = parent;
            }
            serde_ignored::Path::Map { parent, key } => {
                out.push(Segment::Key(key.clone()));
                at = parent;
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => at = parent,
        }
    }
    out.reverse();
    out
}

/// `spec.routes[1].nmae`.
fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Split serde_yaml_ng's "spec.rateLimit.requests: invalid type … at line 9 column 25" into the
/// path and the rest; messages without a path (syntax errors) keep an empty field.
fn split_serde_path(text: &str) -> (&str, &str) {
    if let Some((path, rest)) = text.split_once(": ") {
        let looks_like_path = !path.is_empty()
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-[]".contains(c));
        if looks_like_path {
            return (path, rest);
        }
    }
    ("", text)
}

/// Field names valid next to an unknown one, from the CRD's own OpenAPI schema (so they can never
/// drift from the types).
fn known_fields(kind: &str, parent: &[Segment]) -> Vec<String> {
    let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    match parent {
        [] if kind == "Secret" => owned(SECRET_FIELDS),
        [] => owned(CUSTOM_RESOURCE_FIELDS),
        [Segment::Key(k)] if k == "metadata" => owned(OBJECT_META_FIELDS),
        _ if kind == "Secret" => Vec::new(),
        _ => {
            let Some(mut schema) = crd_schema(kind) else {
                return Vec::new();
            };
            for seg in parent {
                let next = match seg {
                    Segment::Key(k) => schema
                        .get("properties")
                        .and_then(|p| p.get(k))
                        .or_else(|| schema.get("additionalProperties")),
                    Segment::Index(_) => schema.get("items"),
                };
                match next {
                    Some(s) => schema = s,
                    None => return Vec::new(),
                }
            }
            schema
                .get("properties")
                .and_then(|p| p.as_object())
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default()
        }
    }
}

/// The OpenAPI v3 schema of a Tollgate kind, as JSON, built once.
fn crd_schema(kind: &str) -> Option<&'static serde_json::Value> {
    static SCHEMAS: OnceLock<BTreeMap<String, serde_json::Value>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        [
            Product::crd(),
            Plan::crd(),
            Subscription::crd(),
            ApiPolicy::crd(),
        ]
        .into_iter()
        .filter_map(|crd| {
            let kind = crd.spec.names.kind.clone();
            let schema = crd
                .spec
                .versions
                .first()?
                .schema
                .as_ref()?
                .open_api_v3_schema
                .as_ref()?;
            Some((kind, serde_json::to_value(schema).ok()?))
        })
        .collect()
    });
    schemas.get(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(files: &[(&str, &str)]) -> ManifestSet {
        let mut set = ManifestSet::default();
        for (name, text) in files {
            set.add_file(name, text);
        }
        set
    }

    fn reasons(set: &ManifestSet) -> Vec<&str> {
        set.problems.iter().map(|d| d.reason.as_str()).collect()
    }

    const PLAN: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Plan\nmetadata: {name: free}\nspec: {product: weather}\n";

    #[test]
    fn merging_files_read_apart_keeps_every_kind() {
        // As the proxy reads a directory: each file on its own, then merged.
        let files = [
            ("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n"),
            ("ca.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: t}\ndata: {ca.crt: x}\n"),
            (
                "tls.yaml",
                "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: p, namespace: t}\nspec:\n  targetRefs: [{group: '', kind: Service, name: s}]\n  validation: {hostname: s.t.svc, wellKnownCACertificates: System}\n",
            ),
        ];
        let mut merged = ManifestSet::default();
        for (name, text) in files {
            merged.merge(read(&[(name, text)]));
        }
        assert_eq!(reasons(&merged), Vec::<&str>::new());
        let gw = &merged.snapshot.gateway;
        assert_eq!(
            (
                gw.namespaces.len(),
                gw.config_maps.len(),
                gw.backend_tls_policies.len()
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn splits_documents_and_keeps_file_line_numbers() {
        let text = "# preamble comment\n---\na: 1\n--- {b: 2}\n...\n---\r\nc: 3\r\n---\n";
        let docs = split_documents(text);
        // The trailing `---` opens an empty fourth document, skipped when read.
        assert_eq!(docs.len(), 4);
        assert!(!has_content(&docs[3].text));
        assert_eq!((docs[0].number, docs[0].line), (1, 2));
        assert_eq!((docs[1].number, docs[1].line), (2, 4));
        assert_eq!((docs[2].number, docs[2].line), (3, 6));
        let value: Value = serde_yaml_ng::from_str(&docs[1].text).expect("inline doc");
        assert_eq!(value.get("b").and_then(Value::as_u64), Some(2));
        // Text line 1 is the `---` line (file line 6), so `c: 3` is text line 2, file line 7.
        assert_eq!(docs[2].offset, 5);
    }

    #[test]
    fn content_before_the_first_marker_is_a_document() {
        let docs = split_documents("\u{feff}a: 1\n---\nb: 2\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, 1);
    }

    #[test]
    fn a_plain_file_loads_with_the_default_namespace() {
        let set = read(&[("a.yaml", PLAN)]);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        assert_eq!(set.snapshot.plans.len(), 1);
        assert_eq!(
            set.snapshot.plans[0].metadata.namespace.as_deref(),
            Some("default")
        );
    }

    #[test]
    fn empty_documents_are_skipped() {
        let set = read(&[("a.yaml", "---\n# nothing\n---\n\n---\n")]);
        assert!(set.problems.is_empty());
    }

    #[test]
    fn unknown_fields_name_file_object_path_and_suggestion() {
        let text = "apiVersion: tollgate.dev/v1alpha1\nkind: Product\nmetadata: {name: w, namespace: ns}\nspec:\n  backend: {url: 'http://x'}\n  routes:\n    - {name: a, path: /a}\n    - {name: b, path: /b, pahtMatch: Exact}\n";
        let set = read(&[("p.yaml", text)]);
        assert_eq!(reasons(&set), [reasons::UNKNOWN_FIELD]);
        let d = &set.problems[0];
        assert_eq!(d.field, "spec.routes[1].pahtMatch");
        assert!(
            d.message.contains("did you mean pathMatch?"),
            "{}",
            d.message
        );
        assert_eq!(
            d.to_string().split(':').take(3).collect::<Vec<_>>(),
            [
                "p.yaml",
                " Product ns/w",
                " spec.routes[1].pahtMatch (UnknownField)"
            ]
        );
        // Left out, and remembered as existing.
        assert!(set.snapshot.products.is_empty());
        assert_eq!(set.snapshot.rejected.len(), 1);
    }

    #[test]
    fn a_broken_document_does_not_hide_the_others() {
        let text = format!(
            "{PLAN}---\nkind: [unclosed\n---\n{}",
            PLAN.replace("free", "gold")
        );
        let set = read(&[("a.yaml", &text)]);
        assert_eq!(reasons(&set), [reasons::INVALID_YAML]);
        assert!(
            set.problems[0].message.starts_with("document 2 (line 5)"),
            "{}",
            set.problems[0].message
        );
        assert_eq!(set.snapshot.plans.len(), 2);
    }

    #[test]
    fn schema_errors_carry_serde_path() {
        let text = PLAN.replace(
            "{product: weather}",
            "{product: weather, quota: {requests: 1, period: Year}}",
        );
        let set = read(&[("a.yaml", &text)]);
        assert_eq!(reasons(&set), [reasons::INVALID_OBJECT]);
        assert_eq!(set.problems[0].field, "spec.quota.period");
        assert!(set.problems[0].message.contains("Year"));
    }

    #[test]
    fn secret_values_are_never_echoed() {
        for value in ["'#not-base64-secret-value'", "[listed-secret-value]"] {
            let text = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: k}}\ndata: {{primaryKey: {value}}}\n");
            let set = read(&[("s.yaml", &text)]);
            assert_eq!(reasons(&set), [reasons::INVALID_OBJECT]);
            assert_eq!(set.problems[0].field, "data.primaryKey");
            assert!(
                !set.problems[0].to_string().contains("secret-value"),
                "{}",
                set.problems[0]
            );
        }
    }

    #[test]
    fn duplicates_across_files_keep_the_first() {
        let set = read(&[("a.yaml", PLAN), ("b.yaml", PLAN)]);
        assert_eq!(reasons(&set), [reasons::DUPLICATE_OBJECT]);
        assert_eq!(set.problems[0].file.as_deref(), Some("b.yaml"));
        assert!(set.problems[0].message.contains("a.yaml (document 1)"));
        assert_eq!(set.snapshot.plans.len(), 1);
        assert_eq!(set.source_of(&set.problems[0].object), Some("a.yaml"));
    }

    #[test]
    fn other_kinds_warn_and_tollgate_lookalikes_fail() {
        let set = read(&[(
            "a.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\napiVersion: tollgate.dev/v1alpha1\nkind: Subscriptoin\nmetadata: {name: s}\n",
        )]);
        assert_eq!(
            reasons(&set),
            [reasons::IGNORED_KIND, reasons::UNKNOWN_KIND]
        );
        assert_eq!(set.problems[0].severity, Severity::Warning);
        assert!(set.problems[1]
            .message
            .contains("did you mean Subscription?"));
    }

    #[test]
    fn compile_attributes_files_to_compiler_diagnostics() {
        let set = read(&[("plans.yaml", PLAN)]);
        let compiled = set.compile();
        let d = &compiled.diagnostics[0];
        assert_eq!(d.reason, reasons::PRODUCT_NOT_FOUND);
        assert_eq!(d.file.as_deref(), Some("plans.yaml"));
    }

    #[test]
    fn known_fields_come_from_the_crd_schema() {
        let spec = known_fields("Plan", &[Segment::Key("spec".into())]);
        assert!(spec.contains(&"rateLimit".to_string()), "{spec:?}");
        let route = known_fields(
            "Product",
            &[
                Segment::Key("spec".into()),
                Segment::Key("routes".into()),
                Segment::Index(0),
            ],
        );
        assert!(route.contains(&"pathMatch".to_string()), "{route:?}");
        assert!(known_fields("Secret", &[]).contains(&"stringData".to_string()));
    }

    #[test]
    fn parser_positions_become_file_positions() {
        assert_eq!(
            shift_line_numbers("x at line 3 column 5, while parsing at line 1 column 2", 10),
            "x at line 13 column 5, while parsing at line 11 column 2"
        );
        assert_eq!(
            shift_line_numbers("`line 3` and line x", 10),
            "`line 3` and line x"
        );
        let text = format!(
            "{PLAN}---\n{}",
            PLAN.replace("{product: weather}", "{product: [a}")
        );
        let set = read(&[("a.yaml", &text)]);
        assert!(
            set.problems[0].message.contains("at line 9 column"),
            "{}",
            set.problems[0].message
        );
    }

    #[test]
    fn large_files_read_in_linear_time() {
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&PLAN.replace("name: free", &format!("name: p{i}")));
            text.push_str("---\n");
        }
        let set = read(&[("big.yaml", &text)]);
        assert!(set.problems.is_empty());
        assert_eq!(set.snapshot.plans.len(), 20_000);
    }

    #[test]
    fn headers_of_the_wrong_type_are_manifest_errors() {
        let set = read(&[(
            "a.yaml",
            "apiVersion: v1\nkind: [Secret]\nmetadata: {name: k}\n---\n- a\n",
        )]);
        assert_eq!(
            reasons(&set),
            [reasons::INVALID_MANIFEST, reasons::INVALID_MANIFEST]
        );
        assert!(
            set.problems[0].message.contains("must be strings"),
            "{}",
            set.problems[0].message
        );
        assert!(
            set.problems[1].message.contains("not a mapping"),
            "{}",
            set.problems[1].message
        );
    }

    #[test]
    fn files_over_the_limits_are_refused_naming_file_and_limit() {
        let limits = Limits {
            max_file_bytes: 100,
            max_depth: 4,
        };
        let mut set = ManifestSet::default();
        set.add_file_within("big.yaml", &"#".repeat(101), &limits);
        let deep = format!("{PLAN}---\na: [[[[[1]]]]]\n");
        set.add_file_within(
            "deep.yaml",
            &deep,
            &Limits {
                max_file_bytes: 1000,
                ..limits
            },
        );
        assert_eq!(
            reasons(&set),
            [
                reasons::MANIFEST_LIMIT_EXCEEDED,
                reasons::MANIFEST_LIMIT_EXCEEDED
            ]
        );
        let big = set.problems[0].to_string();
        assert!(
            big.starts_with("big.yaml: ") && big.contains("101 bytes, over the limit of 100"),
            "{big}"
        );
        let deep = set.problems[1].to_string();
        assert!(
            deep.starts_with("deep.yaml: Document 2 ")
                && deep.contains("deeper than 4 levels")
                && deep.contains("line 6"),
            "{deep}"
        );
        // The other document of the deep file still loads.
        assert_eq!(set.snapshot.plans.len(), 1);
        // A real 200 KB bracket bomb is refused at once (the parser took seconds).
        let bomb = "[".repeat(200_000);
        let started = std::time::Instant::now();
        let mut set = ManifestSet::default();
        set.add_file("bomb.yaml", &bomb);
        assert_eq!(reasons(&set), [reasons::MANIFEST_LIMIT_EXCEEDED]);
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }

    #[test]
    fn merging_files_read_alone_is_reading_them_together() {
        let product = "apiVersion: tollgate.dev/v1alpha1\nkind: Product\nmetadata: {name: weather}\nspec:\n  backend: {url: 'http://x'}\n  routes: [{name: current, path: /current}]\n";
        let bad = PLAN.replace("product:", "prodcut:").replace("free", "bad");
        let files = [
            ("a.yaml", format!("{PLAN}---\n{product}")),
            (
                "b.yaml",
                format!("{bad}---\n{}", PLAN.replace("free", "gold")),
            ),
            // A duplicate of a.yaml's Plan, itself invalid: only the duplicate is reported.
            (
                "c.yaml",
                format!(
                    "{}---\n{}",
                    PLAN.replace("free", "silver"),
                    PLAN.replace("spec:", "spce: 1\nspec:")
                ),
            ),
            (
                "d.yaml",
                PLAN.replace("weather}", "weather, quota: 1}")
                    .replace("free", "dee"),
            ),
        ];
        let mut together = ManifestSet::default();
        let mut merged = ManifestSet::default();
        for (name, text) in &files {
            together.add_file(name, text);
            let mut alone = ManifestSet::default();
            alone.add_file(name, text);
            merged.merge(alone);
        }
        let mut a = together.problems.clone();
        let mut b = merged.problems.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert!(reasons(&merged).contains(&reasons::DUPLICATE_OBJECT));
        assert_eq!(together.sources, merged.sources);
        assert_eq!(together.snapshot.rejected, merged.snapshot.rejected);
        let names = |set: &ManifestSet| {
            set.snapshot
                .plans
                .iter()
                .map(|p| p.metadata.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&together), names(&merged));
        assert_eq!(together.compile(), merged.compile());
    }

    #[test]
    fn serde_paths_are_split_from_messages() {
        assert_eq!(split_serde_path("spec.a[1]: bad"), ("spec.a[1]", "bad"));
        assert_eq!(split_serde_path("did not find: x"), ("", "did not find: x"));
    }
}
