//! HTTP message helpers that every phase may use and that use no phase: header names and
//! policy operations, hop-by-hop headers, method bits, request ids, trace context, query strings, body errors, and the per-thread block that
//! per-request header values are cut from.

pub mod body;
pub mod headers;
pub mod hop_by_hop;
pub mod methods;
pub mod query;
pub mod request_id;
pub mod trace_context;
pub mod value_arena;
