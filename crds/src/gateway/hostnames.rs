//! Which hosts an HTTPRoute serves through one listener: the intersection of the listener's
//! `hostname` and the route's `hostnames`, as the Gateway API defines it.

/// Hosts served through one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Hosts {
    /// Any host (neither side names one).
    Any,
    /// These hosts (exact names or `*.` wildcards), never empty.
    Some(Vec<String>),
    /// The two sides share no host: the listener does not take the route.
    None,
}

/// Intersect a listener's hostname with a route's hostnames.
///
/// A wildcard `*.example.com` matches one or more labels in front of `example.com` (not
/// `example.com` itself); where one side is more specific, the result is that side's name.
pub(crate) fn intersect(listener: Option<&str>, route: &[String]) -> Hosts {
    let route: Vec<String> = route.iter().map(|h| h.to_ascii_lowercase()).collect();
    let Some(listener) = listener.map(str::to_ascii_lowercase) else {
        return if route.is_empty() {
            Hosts::Any
        } else {
            Hosts::Some(route)
        };
    };
    if route.is_empty() {
        return Hosts::Some(vec![listener]);
    }
    let mut out: Vec<String> = Vec::new();
    for host in route {
        let more_specific = if host == listener || wildcard_covers(&listener, &host) {
            Some(host)
        } else if wildcard_covers(&host, &listener) {
            Some(listener.clone())
        } else {
            None
        };
        if let Some(h) = more_specific {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    if out.is_empty() {
        Hosts::None
    } else {
        Hosts::Some(out)
    }
}

/// Whether `pattern` (`*.suffix`) covers `name` (exact or a narrower wildcard).
fn wildcard_covers(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    // `suffix` starts with '.', so `*.example.com` never covers `example.com`.
    let bare = name.strip_prefix('*').unwrap_or(name);
    name.len() > suffix.len() && bare.ends_with(suffix) && bare.len() > suffix.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hosts: &[&str]) -> Vec<String> {
        hosts.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn no_names_on_either_side_is_any_host() {
        assert_eq!(intersect(None, &[]), Hosts::Any);
    }

    #[test]
    fn one_side_named_gives_that_side() {
        assert_eq!(intersect(Some("a.io"), &[]), Hosts::Some(v(&["a.io"])));
        assert_eq!(intersect(None, &v(&["a.io"])), Hosts::Some(v(&["a.io"])));
    }

    #[test]
    fn the_more_specific_name_wins() {
        assert_eq!(
            intersect(Some("*.example.com"), &v(&["foo.example.com", "other.io"])),
            Hosts::Some(v(&["foo.example.com"]))
        );
        assert_eq!(
            intersect(Some("foo.example.com"), &v(&["*.example.com"])),
            Hosts::Some(v(&["foo.example.com"]))
        );
        assert_eq!(
            intersect(Some("*.example.com"), &v(&["*.a.example.com"])),
            Hosts::Some(v(&["*.a.example.com"]))
        );
    }

    #[test]
    fn a_wildcard_does_not_cover_its_own_suffix_and_disjoint_names_do_not_meet() {
        assert_eq!(
            intersect(Some("*.example.com"), &v(&["example.com"])),
            Hosts::None
        );
        assert_eq!(intersect(Some("a.io"), &v(&["b.io"])), Hosts::None);
    }
}
