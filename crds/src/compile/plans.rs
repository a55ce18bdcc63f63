//! Plan → [`PlanEntry`]: its product, its routes, its rate limit and quota.

use super::{object_id, suggestion, Input, Lookup, Outcomes, Rejected, Report};
use crate::diagnostics::Diagnostic;
use crate::durations::parse_period_ms;
use crate::plan::{Plan, RateLimit};
use crate::reasons;
use crate::table::{PlanEntry, ProductEntry, QuotaEntry, RateLimitEntry};

/// CRD range for `rateLimit.requests` and `rateLimit.burst`.
const MAX_RATE: u32 = 1_000_000_000;

/// Compile every Plan against the products that compiled.
pub(crate) fn compile(
    inputs: &[Input<'_, Plan>],
    products: &Outcomes<ProductEntry>,
    rejected: &Rejected<'_>,
    out: &mut Vec<Diagnostic>,
) -> Outcomes<PlanEntry> {
    let mut outcomes = Outcomes::default();
    for input in inputs {
        let mut report = Report::new(&input.object, out);
        let entry = compile_one(input, products, rejected, &mut report);
        let outcome = report.finish(entry);
        outcomes.insert(&input.object, outcome);
    }
    outcomes
}

fn compile_one(
    input: &Input<'_, Plan>,
    products: &Outcomes<ProductEntry>,
    rejected: &Rejected<'_>,
    report: &mut Report<'_>,
) -> Option<PlanEntry> {
    let spec = &input.value.spec;
    let namespace = &input.object.namespace;
    let product_id = object_id(namespace, &spec.product);

    let product = match products.lookup(namespace, &spec.product) {
        Lookup::Ready(p) => Some(p),
        _ if spec.product.is_empty() => {
            report.error(
                "spec.product",
                reasons::INVALID_FIELD,
                "spec.product is empty; set it to the name of a Product in the same namespace",
            );
            None
        }
        Lookup::NotReady(reason) => {
            report.error(
                "spec.product",
                reasons::PRODUCT_NOT_READY,
                format!("Product {product_id} did not compile ({reason}); fix it first (see its own diagnostics)"),
            );
            None
        }
        Lookup::NotFound if rejected.contains("Product", namespace, &spec.product) => {
            report.error(
                "spec.product",
                reasons::PRODUCT_NOT_READY,
                format!("Product {product_id} could not be read; fix the error reported for it"),
            );
            None
        }
        Lookup::NotFound => {
            report.error(
                "spec.product",
                reasons::PRODUCT_NOT_FOUND,
                format!(
                    "Product {product_id} does not exist{}; create it or set spec.product to a Product in namespace {namespace}",
                    suggestion(&spec.product, products.names_in(namespace))
                ),
            );
            None
        }
    };

    let routes = match (&spec.routes, product) {
        (Some(list), product) => {
            let mut routes = Vec::new();
            for (i, name) in list.iter().enumerate() {
                if list[..i].contains(name) {
                    report.error(
                        format!("spec.routes[{i}]"),
                        reasons::DUPLICATE_ROUTE_NAME,
                        format!("route `{name}` is listed twice; list each route once"),
                    );
                    continue;
                }
                // Without a compiled product the names cannot be checked; the product error says why.
                if let Some(product) = product {
                    if product.routes.iter().any(|r| &r.name == name) {
                        routes.push(name.clone());
                    } else {
                        let valid: Vec<&str> =
                            product.routes.iter().map(|r| r.name.as_str()).collect();
                        report.error(
                            format!("spec.routes[{i}]"),
                            reasons::ROUTE_NOT_FOUND,
                            format!(
                                "Product {product_id} has no route `{name}`{}; valid names: {}",
                                suggestion(name, valid.iter().copied()),
                                valid.join(", ")
                            ),
                        );
                    }
                }
            }
            routes
        }
        (None, Some(product)) => product.routes.iter().map(|r| r.name.clone()).collect(),
        (None, None) => Vec::new(),
    };

    let rate_limit = spec
        .rate_limit
        .as_ref()
        .and_then(|rl| rate_limit(rl, "spec.rateLimit", report));

    let quota = spec.quota.as_ref().and_then(|q| {
        if q.requests == 0 {
            report.error(
                "spec.quota.requests",
                reasons::INVALID_QUOTA,
                "quota.requests must be at least 1; remove the quota for unlimited calls",
            );
            return None;
        }
        Some(QuotaEntry {
            requests: q.requests,
            period: q.period,
            failure_policy: q.failure_policy.unwrap_or_default(),
        })
    });

    let mut routes = routes;
    routes.sort();
    let mut scopes = spec.scopes.clone();
    scopes.sort();
    scopes.dedup();

    let product = product?;
    (!report.has_errors()).then(|| PlanEntry {
        id: input.id(),
        product: product.id.clone(),
        display_name: spec
            .display_name
            .clone()
            .unwrap_or_else(|| input.object.name.clone()),
        routes,
        rate_limit,
        quota,
        scopes,
        approval_required: spec.approval_required,
    })
}

/// Check a rate limit written as `{requests, period, burst}` at `field`.
pub(crate) fn rate_limit(
    rl: &RateLimit,
    field: &str,
    report: &mut Report<'_>,
) -> Option<RateLimitEntry> {
    let mut ok = true;
    if rl.requests == 0 || rl.requests > MAX_RATE {
        report.error(
            format!("{field}.requests"),
            reasons::INVALID_RATE_LIMIT,
            format!("requests must be between 1 and {MAX_RATE}; to block all calls remove the routes instead"),
        );
        ok = false;
    }
    let period_ms = parse_period_ms(&rl.period);
    if period_ms.is_none() {
        report.error(
            format!("{field}.period"),
            reasons::INVALID_RATE_LIMIT,
            format!("`{}` is not a period; write a positive whole number and s, m or h, like 30s, 1m or 1h", rl.period),
        );
    }
    if let Some(burst) = rl.burst {
        if burst == 0 || burst > MAX_RATE {
            report.error(
                format!("{field}.burst"),
                reasons::INVALID_RATE_LIMIT,
                format!(
                    "burst must be between 1 and {MAX_RATE}, or omitted (it defaults to requests)"
                ),
            );
            ok = false;
        }
    }
    Some(RateLimitEntry {
        requests: rl.requests,
        period_ms: period_ms.filter(|_| ok)?,
        burst: rl.burst.unwrap_or(rl.requests),
    })
}
