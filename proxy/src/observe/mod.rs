//! What the gateway tells its operators: Prometheus [`metrics`] and the [`access_log`], written
//! by the [`logged_body`] every response is sent with once its last byte has gone, and, when
//! configured, the request's span exported over OTLP ([`trace_export`]).

pub mod access_log;
pub mod logged_body;
pub mod metrics;
pub mod trace_export;
