//! What the gateway tells its operators: Prometheus [`metrics`] and the [`access_log`], written
//! by the [`logged_body`] every response is sent with once its last byte has gone.

pub mod access_log;
pub mod logged_body;
pub mod metrics;
