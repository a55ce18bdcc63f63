//! Required scopes: which scopes a route and method need, and whether a token has them.

use http::HeaderValue;

/// One `requiredScopes` entry, resolved against one product's routes.
#[derive(Debug, Clone)]
pub struct ScopeRule {
    /// Method bits ([`crate::message::methods::method_bit`]); 0 means every method.
    pub methods: u8,
    /// Route indices of the product; `None` means every route.
    pub routes: Option<Vec<u32>>,
    /// Every one of these must be granted.
    pub scopes: Vec<String>,
    /// The `scope` attribute for `WWW-Authenticate` (space-separated), when representable.
    pub challenge: Option<HeaderValue>,
}

impl ScopeRule {
    /// A rule; the challenge value is computed once here.
    pub fn new(methods: u8, routes: Option<Vec<u32>>, scopes: Vec<String>) -> ScopeRule {
        let challenge = HeaderValue::from_str(&scopes.join(" ")).ok();
        ScopeRule {
            methods,
            routes,
            scopes,
            challenge,
        }
    }

    fn applies(&self, route: u32, method_bit: u8) -> bool {
        (self.methods == 0 || self.methods & method_bit != 0)
            && self.routes.as_ref().is_none_or(|r| r.contains(&route))
    }
}

/// The first rule for `route` and `method_bit` whose scopes are not all in `granted`.
pub fn first_unmet<'r>(
    rules: &'r [ScopeRule],
    route: u32,
    method_bit: u8,
    granted: &[String],
) -> Option<&'r ScopeRule> {
    rules.iter().find(|rule| {
        rule.applies(route, method_bit) && !rule.scopes.iter().all(|s| granted.contains(s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: u8 = 1;
    const POST: u8 = 1 << 2;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn per_method_and_per_route() {
        let rules = vec![
            ScopeRule::new(POST, None, s(&["w.write"])),
            ScopeRule::new(0, Some(vec![1]), s(&["w.admin", "w.read"])),
        ];
        assert!(first_unmet(&rules, 0, GET, &[]).is_none());
        let unmet = first_unmet(&rules, 0, POST, &s(&["w.read"])).expect("needs write");
        assert_eq!(unmet.challenge.as_ref().expect("value"), "w.write");
        assert!(first_unmet(&rules, 0, POST, &s(&["w.write"])).is_none());
        assert!(first_unmet(&rules, 1, GET, &s(&["w.read"])).is_some());
        assert!(first_unmet(&rules, 1, GET, &s(&["w.read", "w.admin"])).is_none());
        // An empty route list in the resolved rule means no route of this product.
        let none = vec![ScopeRule::new(0, Some(vec![]), s(&["x"]))];
        assert!(first_unmet(&none, 0, GET, &[]).is_none());
    }
}
