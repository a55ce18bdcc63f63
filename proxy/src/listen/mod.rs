//! Sockets: the proxy listener ([`server`], with the connection-level framing check in
//! [`framing`], the connection caps and timeouts in [`limits`], and the request-head timer in
//! [`head_timer`]) and the admin listener
//! ([`admin`]: health, readiness, metrics); [`workers`] serves the proxy listeners from several
//! threads.

pub mod admin;
pub mod framing;
pub mod head_timer;
pub mod limits;
pub mod server;
pub mod workers;
