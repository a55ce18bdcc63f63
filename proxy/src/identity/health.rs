//! What the workload identity's state means for `/readyz` and metrics (pure).
//!
//! A proxy configured with an identity is not ready without one, nor once it has expired: every
//! mutual TLS handshake would fail. A certificate whose renewal is failing still serves until it
//! expires (the issue's rule: keep serving, and say so), so that state is ready but degraded.

use super::store::Identity;

/// The identity's state at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Nothing installed yet.
    Missing,
    /// The installed certificate expired at this instant (Unix seconds).
    Expired {
        /// Its `notAfter`.
        not_after: i64,
    },
    /// Installed and valid, but the last attempts to renew it failed.
    Degraded {
        /// Failed attempts since the last success.
        failures: u64,
        /// The last attempt's error.
        error: String,
        /// `notAfter` of the certificate still in use, if known.
        not_after: Option<i64>,
    },
    /// Installed, valid, and renewal (if any) is fine.
    Healthy,
}

impl Health {
    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        matches!(self, Health::Degraded { .. } | Health::Healthy)
    }

    /// One line for `/readyz` (no key, token or certificate content).
    pub fn describe(&self) -> String {
        match self {
            Health::Missing => "no workload identity installed yet".to_string(),
            Health::Expired { not_after } => {
                format!("the workload certificate expired at {not_after} (Unix seconds) and no renewal succeeded")
            }
            Health::Degraded {
                failures,
                error,
                not_after,
            } => {
                let until = not_after.map_or_else(String::new, |t| {
                    format!("; the current certificate serves until {t} (Unix seconds)")
                });
                format!("degraded: {failures} workload certificate renewal attempt(s) failed, the last with: {error}{until}")
            }
            Health::Healthy => "workload identity ok".to_string(),
        }
    }
}

/// The state of `identity` at `now` (Unix seconds).
pub fn health(identity: &Identity, now: i64) -> Health {
    let Some(current) = identity.current() else {
        return Health::Missing;
    };
    if let Some(not_after) = current.not_after.filter(|t| *t <= now) {
        return Health::Expired { not_after };
    }
    match identity.renewal() {
        (failures, Some(error)) if failures > 0 => Health::Degraded {
            failures,
            error,
            not_after: current.not_after,
        },
        _ => Health::Healthy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::store::test_identities::TestCa;

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    #[test]
    fn missing_expired_degraded_and_healthy() {
        let identity = Identity::new();
        assert_eq!(health(&identity, now()), Health::Missing);
        assert!(!Health::Missing.ready());

        let ca = TestCa::new("health");
        let issued = ca.issue("spiffe://cluster.local/ns/a/sa/b", false);
        identity
            .install(
                issued.chain.as_bytes(),
                issued.key.as_bytes(),
                ca.pem().as_bytes(),
            )
            .expect("install");
        assert_eq!(health(&identity, now()), Health::Healthy);

        // A failed renewal: still ready, and says why.
        identity.record_renewal(2, Some("the operator refused: 503".into()));
        let h = health(&identity, now());
        assert!(h.ready(), "{h:?}");
        assert!(
            h.describe()
                .contains("2 workload certificate renewal attempt(s) failed"),
            "{}",
            h.describe()
        );
        assert!(h.describe().contains("503"));
        // A success clears it.
        identity.record_renewal(0, None);
        assert_eq!(health(&identity, now()), Health::Healthy);

        // Past notAfter: not ready, whatever the renewal state.
        let not_after = identity
            .current()
            .and_then(|c| c.not_after)
            .expect("notAfter");
        let h = health(&identity, not_after + 1);
        assert_eq!(h, Health::Expired { not_after });
        assert!(!h.ready());
    }
}
