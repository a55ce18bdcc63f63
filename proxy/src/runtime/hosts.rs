//! The host index: which routes answer on which hosts, most specific first.

use std::collections::HashMap;

use tollgate_crds::product::PathMatch;
use tollgate_crds::table::RoutingTable;

use super::{HostIndex, ProductRt, RouteRef};

/// Index the routes of `table` (whose products are `products`, in the same order) by host.
pub(super) fn index(table: &RoutingTable, products: &[ProductRt]) -> HostIndex {
    let mut idx = HostIndex::default();
    let mut wildcard: HashMap<String, Vec<RouteRef>> = HashMap::new();
    for (pi, p) in table.products.iter().enumerate() {
        let Ok(product) = u32::try_from(pi) else {
            break;
        };
        let refs = (0..p.routes.len())
            .filter_map(|ri| u32::try_from(ri).ok())
            .map(|route| RouteRef { product, route });
        if p.hostnames.is_empty() {
            idx.any.extend(refs);
            continue;
        }
        let refs: Vec<RouteRef> = refs.collect();
        for h in &p.hostnames {
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
