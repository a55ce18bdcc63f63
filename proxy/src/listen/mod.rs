//! Sockets: the proxy listener ([`server`], with the connection-level framing check in
//! [`framing`] and the connection caps and timeouts in [`limits`]) and the admin listener
//! ([`admin`]: health, readiness, metrics); [`workers`] serves the proxy listeners from several
//! threads.

pub mod admin;
pub mod framing;
pub mod limits;
pub mod server;
pub mod workers;
