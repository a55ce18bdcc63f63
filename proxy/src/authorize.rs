//! Authorisation: may this caller use this route? Pure functions of the runtime, the caller, the
//! client address and the time.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use tollgate_crds::subscription::SubscriptionState;
use tollgate_crds::table::IpFilterEntry;

use crate::jwt::scopes;
use crate::jwt::verify::Verified;
use crate::jwt::ProductJwt;
use crate::message::methods::method_bit;
use crate::problem::Rejection;
use crate::runtime::{contains, PlanRt, RouteRef, SubscriptionRt};

/// ApiPolicy `ipFilter`s (every attached filter must admit the caller): deny wins, an empty
/// allow list admits everyone. Runs before identification (pipeline stage 3, docs/architecture.md).
pub fn check_ip_filters(filters: &[IpFilterEntry], peer: IpAddr) -> Result<(), Rejection> {
    let peer = peer.to_canonical();
    for f in filters {
        if contains(&f.deny, peer) || (!f.allow.is_empty() && !contains(&f.allow, peer)) {
            return Err(Rejection::IpDenied);
        }
    }
    Ok(())
}

/// A subscription's right to call `route`: state, approval, expiry, product, plan routes,
/// source ranges.
pub fn authorize(
    sub: &SubscriptionRt,
    plan: &PlanRt,
    route: RouteRef,
    peer: IpAddr,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    match sub.state {
        SubscriptionState::Active => {}
        SubscriptionState::Suspended => return Err(Rejection::SubscriptionSuspended),
        SubscriptionState::Cancelled => return Err(Rejection::SubscriptionCancelled),
    }
    // After the state: a provider who suspends or cancels a pending subscription has decided,
    // and that is the truer answer. Before everything else, so no quota is spent and nothing
    // about the plan is revealed before approval.
    if sub.pending_approval {
        return Err(Rejection::SubscriptionPendingApproval);
    }
    if sub.expires_at().is_some_and(|at| now >= at) {
        return Err(Rejection::SubscriptionExpired);
    }
    if plan.product != Some(route.product) {
        return Err(Rejection::WrongProduct);
    }
    if !plan
        .routes
        .get(route.route as usize)
        .copied()
        .unwrap_or(false)
    {
        return Err(Rejection::RouteNotInPlan);
    }
    let ranges = sub.allowed_source_ranges();
    if !ranges.is_empty() && !contains(ranges, peer.to_canonical()) {
        return Err(Rejection::SourceNotAllowed);
    }
    Ok(())
}

/// The token carries every scope the product's `jwt` policies require for this route and method.
pub fn check_scopes(
    jwt: &[ProductJwt],
    route: RouteRef,
    method: &http::Method,
    token: &Verified,
) -> Result<(), Rejection> {
    let bit = method_bit(method);
    for policy in jwt {
        if let Some(rule) = scopes::first_unmet(&policy.scopes, route.route, bit, &token.scopes) {
            return Err(Rejection::InsufficientScope {
                scope: rule.challenge.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(state: SubscriptionState) -> SubscriptionRt {
        SubscriptionRt::for_tests(state)
    }

    fn plan(product: u32, routes: Vec<bool>) -> PlanRt {
        PlanRt {
            id: "ns/plan".into(),
            product: Some(product),
            routes,
            rate: None,
            quota: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
            .expect("ts")
            .with_timezone(&Utc)
    }

    const R0: RouteRef = RouteRef {
        product: 0,
        route: 0,
    };
    const R1: RouteRef = RouteRef {
        product: 0,
        route: 1,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn states_expiry_product_and_plan_routes() {
        let p = plan(0, vec![true, false]);
        let local = ip("127.0.0.1");
        assert_eq!(
            authorize(&sub(SubscriptionState::Active), &p, R0, local, now()),
            Ok(())
        );
        assert_eq!(
            authorize(&sub(SubscriptionState::Suspended), &p, R0, local, now()),
            Err(Rejection::SubscriptionSuspended)
        );
        assert_eq!(
            authorize(&sub(SubscriptionState::Cancelled), &p, R0, local, now()),
            Err(Rejection::SubscriptionCancelled)
        );
        let mut pending = sub(SubscriptionState::Active);
        pending.pending_approval = true;
        assert_eq!(
            authorize(&pending, &p, R0, local, now()),
            Err(Rejection::SubscriptionPendingApproval)
        );
        pending.state = SubscriptionState::Suspended;
        assert_eq!(
            authorize(&pending, &p, R0, local, now()),
            Err(Rejection::SubscriptionSuspended)
        );
        let mut expired = sub(SubscriptionState::Active);
        expired.restrictions = Some(Box::new(crate::runtime::Restrictions {
            expires_at: Some(now()),
            ..Default::default()
        }));
        assert_eq!(
            authorize(&expired, &p, R0, local, now()),
            Err(Rejection::SubscriptionExpired)
        );
        assert_eq!(
            authorize(&sub(SubscriptionState::Active), &p, R1, local, now()),
            Err(Rejection::RouteNotInPlan)
        );
        let other = RouteRef {
            product: 1,
            route: 0,
        };
        assert_eq!(
            authorize(&sub(SubscriptionState::Active), &p, other, local, now()),
            Err(Rejection::WrongProduct)
        );
    }

    #[test]
    fn source_ranges() {
        let p = plan(0, vec![true]);
        let mut s = sub(SubscriptionState::Active);
        s.restrictions = Some(Box::new(crate::runtime::Restrictions {
            allowed_source_ranges: Box::new(["10.0.0.0/8".parse().expect("net")]),
            ..Default::default()
        }));
        assert_eq!(authorize(&s, &p, R0, ip("10.1.2.3"), now()), Ok(()));
        assert_eq!(authorize(&s, &p, R0, ip("::ffff:10.1.2.3"), now()), Ok(()));
        assert_eq!(
            authorize(&s, &p, R0, ip("192.0.2.1"), now()),
            Err(Rejection::SourceNotAllowed)
        );
    }

    #[test]
    fn ip_filter_deny_wins_and_empty_allow_admits_all() {
        let f = IpFilterEntry {
            allow: vec!["10.0.0.0/8".parse().expect("net")],
            deny: vec!["10.6.6.0/24".parse().expect("net")],
        };
        assert_eq!(
            check_ip_filters(std::slice::from_ref(&f), ip("10.1.1.1")),
            Ok(())
        );
        assert_eq!(
            check_ip_filters(std::slice::from_ref(&f), ip("10.6.6.6")),
            Err(Rejection::IpDenied)
        );
        assert_eq!(
            check_ip_filters(std::slice::from_ref(&f), ip("192.0.2.1")),
            Err(Rejection::IpDenied)
        );
        let deny_only = IpFilterEntry {
            allow: vec![],
            deny: vec!["192.0.2.0/24".parse().expect("net")],
        };
        assert_eq!(
            check_ip_filters(std::slice::from_ref(&deny_only), ip("127.0.0.1")),
            Ok(())
        );
        assert_eq!(check_ip_filters(&[], ip("127.0.0.1")), Ok(()));
    }
}
