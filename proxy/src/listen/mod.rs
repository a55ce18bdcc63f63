//! Sockets: the proxy listener ([`server`], with the connection-level framing check in
//! [`framing`], the connection caps and timeouts in [`limits`], and the request-head timer in
//! [`head_timer`]) and the admin listener
//! ([`admin`]: health, readiness, metrics); [`workers`] serves the proxy listeners from several
//! threads; [`gateway_sockets`] opens and closes the sockets of Gateways with addresses of
//! their own as tables change.

pub mod admin;
pub mod framing;
pub mod gateway_sockets;
pub mod head_timer;
pub mod limits;
pub mod server;
pub mod workers;
