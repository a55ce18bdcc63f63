//! HTTP message helpers that every phase may use and that use no phase: header names and
//! policy operations, hop-by-hop headers, method bits, request ids, trace context, query strings, body errors.

pub mod body;
pub mod headers;
pub mod hop_by_hop;
pub mod methods;
pub mod query;
pub mod request_id;
pub mod trace_context;
