//! The compiler's input: every Tollgate object plus the Secrets they may reference.

use k8s_openapi::api::core::v1::Secret;

use crate::diagnostics::ObjectRef;
use crate::gateway::GatewayObjects;
use crate::{ApiPolicy, Plan, Product, Subscription};

/// A point-in-time set of resources, as gathered from a directory or from watches.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Products.
    pub products: Vec<Product>,
    /// Plans.
    pub plans: Vec<Plan>,
    /// Subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// ApiPolicies.
    pub policies: Vec<ApiPolicy>,
    /// Secrets (key Secrets and TLS material). Both `data` and `stringData` are read.
    pub secrets: Vec<Secret>,
    /// Ready pod addresses behind Service ports (from EndpointSlices, in a cluster); a product
    /// whose `backend.service` has an entry here is balanced across those pods. Empty in
    /// standalone mode: such products use the Service's DNS name.
    pub endpoints: Vec<ServiceEndpoints>,
    /// Objects that exist but could not be read (e.g. a manifest with a typo). They are not
    /// compiled; references to them are reported as `*NotReady` instead of `*NotFound`, so the
    /// message points at the real cause. Empty in a cluster (the API server validated them).
    pub rejected: Vec<ObjectRef>,
    /// Gateway API objects (GatewayClasses, Gateways, HTTPRoutes, ReferenceGrants, Services),
    /// from which Products with `targetRefs` get their routes.
    pub gateway: GatewayObjects,
}

/// The ready endpoints of one Service port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceEndpoints {
    /// Namespace of the Service.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// The Service port (what `backend.service.port` names).
    pub port: u16,
    /// `ip:targetPort` of each ready endpoint (IPv6 as `[ip]:port`).
    pub addresses: Vec<String>,
    /// Set when `addresses` are sidecar-injected pods: how proxies reach them (mutual TLS to
    /// the sidecar port, checking this identity).
    pub workload: Option<crate::table::WorkloadMtls>,
}
