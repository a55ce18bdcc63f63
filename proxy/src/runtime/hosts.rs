//! The host index: which routes answer on which hosts, most specific first.

use std::collections::HashMap;
use std::net::SocketAddr;

use rustc_hash::FxHashMap;

use tollgate_crds::product::PathMatch;
use tollgate_crds::table::RoutingTable;

use super::{HostIndex, ProductRt, RouteRef};

/// The host indexes of `table` (whose products are `products`, in the same order), by socket.
pub(super) struct Indexes {
    /// The proxies' own listeners: the products not bound to an addressed Gateway.
    pub own: HostIndex,
    /// Each addressed Gateway's socket (address and port): the products bound there, for the
    /// binding's hosts.
    pub scoped: FxHashMap<SocketAddr, HostIndex>,
    /// Every product on the proxies' own listeners (bound ones for all their hosts): what a
    /// proxy without `--gateway-sockets` serves. `None` when no product is bound.
    pub unscoped: Option<HostIndex>,
}

/// Index the routes of `table` by socket and host.
pub(super) fn indexes(table: &RoutingTable, products: &[ProductRt]) -> Indexes {
    let addresses: HashMap<&str, std::net::IpAddr> = table
        .gateways
        .iter()
        .map(|g| (g.id.as_str(), g.address))
        .collect();
    let all = || {
        table
            .products
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.hostnames.as_slice()))
    };
    let own = index(
        table,
        all().filter(|(i, _)| table.products[*i].bindings.is_empty()),
        products,
    );
    let mut by_socket: HashMap<SocketAddr, Vec<(usize, &[String])>> = HashMap::new();
    for (i, p) in table.products.iter().enumerate() {
        for b in &p.bindings {
            if let Some(address) = addresses.get(b.gateway.as_str()) {
                by_socket
                    .entry(SocketAddr::new(*address, b.port))
                    .or_default()
                    .push((i, b.hostnames.as_slice()));
            }
        }
    }
    let scoped = by_socket
        .into_iter()
        .map(|(socket, entries)| (socket, index(table, entries.into_iter(), products)))
        .collect();
    let bound = table.products.iter().any(|p| !p.bindings.is_empty());
    Indexes {
        own,
        scoped,
        unscoped: bound.then(|| index(table, all(), products)),
    }
}

/// Index the routes of the given products (index in `table`, hostnames to serve them on) by
/// host.
fn index<'t>(
    table: &'t RoutingTable,
    entries: impl Iterator<Item = (usize, &'t [String])>,
    products: &[ProductRt],
) -> HostIndex {
    let mut idx = HostIndex::default();
    let mut wildcard: HashMap<String, Vec<RouteRef>> = HashMap::new();
    for (pi, hostnames) in entries {
        let (Ok(product), Some(p)) = (u32::try_from(pi), table.products.get(pi)) else {
            continue;
        };
        let refs = (0..p.routes.len())
            .filter_map(|ri| u32::try_from(ri).ok())
            .map(|route| RouteRef { product, route });
        if hostnames.is_empty() {
            idx.any.extend(refs);
            continue;
        }
        let refs: Vec<RouteRef> = refs.collect();
        for h in hostnames {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) => wildcard
                    .entry(suffix.to_string())
                    .or_default()
                    .extend(&refs),
                None => idx.exact.entry(h).or_default().extend(&refs),
            }
        }
    }
    let by_specificity = |a: &RouteRef, b: &RouteRef| {
        let key = |r: &RouteRef| {
            products
                .get(r.product as usize)
                .and_then(|p| p.routes.get(r.route as usize))
                .map(|rt| {
                    // The Gateway API's precedence: exact path, longest prefix, a method
                    // match, most header matches, most query matches.
                    (
                        rt.path_match != PathMatch::Exact,
                        usize::MAX - rt.path.len(),
                        rt.methods == 0,
                        usize::MAX - rt.headers.len(),
                        usize::MAX - rt.query_params.len(),
                    )
                })
        };
        key(a)
            .cmp(&key(b))
            .then(a.product.cmp(&b.product))
            .then(a.route.cmp(&b.route))
    };
    for refs in idx.exact.values_mut() {
        refs.sort_by(by_specificity);
    }
    idx.any.sort_by(by_specificity);
    let mut wildcard: Vec<(String, Vec<RouteRef>)> = wildcard.into_iter().collect();
    for (_, refs) in &mut wildcard {
        refs.sort_by(by_specificity);
    }
    wildcard.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    idx.wildcard = wildcard;
    idx
}
