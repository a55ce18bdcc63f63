//! Reading request bodies under validation.
//!
//! # Memory
//! - With JSON checks (`json` or `jsonSchema`), the body is read frame by frame into one buffer
//!   while the streaming scanner checks it; the read stops at the first violation. The buffer
//!   never holds more than the route's `maxBodyBytes` (the compiler caps it at 64 MiB and
//!   defaults it to 1 MiB when JSON checks are on), plus the scanner's O(`maxDepth`) stack. A
//!   declared `Content-Length` (already checked against the limit) is reserved up front; a body
//!   without one grows the buffer by doubling, so while it grows it may briefly take up to
//!   twice what has arrived. Memory is only touched as bytes arrive, and a refused body stops
//!   the read: a JSON bomb costs what was read before its limit tripped.
//!   Only a body that passed every check is handed on, as one [`http_body_util::Full`], so
//!   the backend never sees a byte of a refused body.
//! - With only `maxBodyBytes`, nothing is held: the body streams through a [`CountedBody`]
//!   that fails the stream once more than the limit has passed. A `Content-Length` over the
//!   limit is refused before reading; a body that declares a length cannot exceed it (hyper
//!   enforces the framing), so only bodies without a length can trip the counter mid-stream.
//!   The backend then sees a truncated body (the connection breaks), and the client gets 413
//!   unless the backend already answered.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, CONTENT_LENGTH};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use prometheus::IntCounter;

use super::json_scan::{JsonLimits, ScanError, Scanner};
use super::schema::Schema;
use crate::message::body::BoxError;
use crate::problem::Rejection;

/// The declared `Content-Length`, when there is exactly one valid value.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Set once a [`CountedBody`] went over its limit, so the forward phase can answer 413
/// instead of 502 when the backend exchange failed because of it.
#[derive(Debug, Clone, Default)]
pub struct Overflow(Arc<AtomicBool>);

impl Overflow {
    /// Whether the limit was crossed.
    pub fn tripped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub(crate) fn trip(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The body stream went over `maxBodyBytes` (the error the backend connection sees).
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct TooLarge {
    /// The limit in bytes.
    pub limit: u64,
}

/// The client's request body broke off: malformed chunked framing or a connection closed before
/// the declared length (the error the backend connection sees, wrapping hyper's). The forward
/// phase finds it in the backend exchange's error and answers `400 body-unreadable`: the client's
/// fault, not the backend's.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body could not be read")]
pub struct ClientBodyError(#[source] pub hyper::Error);

#[derive(Debug)]
struct Cap {
    limit: u64,
    seen: u64,
    overflow: Overflow,
}

/// The client's body on its way to the backend (or into a held buffer), optionally counted
/// against a limit. A read error of the client's body is its fault: it is counted in
/// `unreadable` and logged here, the one place every body passes, whether or not the backend's
/// answer had already started, and handed on as a [`ClientBodyError`] (which fails the backend
/// exchange: hyper closes that connection, so the backend never takes a truncated body for a
/// whole one).
#[derive(Debug)]
pub struct CountedBody {
    inner: Incoming,
    cap: Option<Cap>,
    unreadable: IntCounter,
}

impl CountedBody {
    /// Pass `inner` through unchanged; a read error counts in `unreadable`.
    pub fn unlimited(inner: Incoming, unreadable: IntCounter) -> CountedBody {
        CountedBody {
            inner,
            cap: None,
            unreadable,
        }
    }

    /// Pass `inner` through, failing the stream once more than `limit` bytes have passed.
    pub fn capped(inner: Incoming, limit: u64, unreadable: IntCounter) -> (CountedBody, Overflow) {
        let overflow = Overflow::default();
        let body = CountedBody {
            inner,
            cap: Some(Cap {
                limit,
                seen: 0,
                overflow: overflow.clone(),
            }),
            unreadable,
        };
        (body, overflow)
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                this.unreadable.inc();
                tracing::info!(
                    target: "request",
                    error = %e,
                    "the client's request body broke off (invalid chunked framing or an early close); the backend request is aborted"
                );
                return Poll::Ready(Some(Err(Box::new(ClientBodyError(e)))));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let (Some(cap), Some(data)) = (this.cap.as_mut(), frame.data_ref()) {
            cap.seen = cap.seen.saturating_add(data.len() as u64);
            if cap.seen > cap.limit {
                cap.overflow.0.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(Box::new(TooLarge { limit: cap.limit }))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a held body must pass.
#[derive(Debug)]
pub struct BodyChecks<'a> {
    /// Largest body in bytes.
    pub max_bytes: u64,
    /// Structural JSON limits.
    pub limits: JsonLimits,
    /// Schemas the document must satisfy (all of them).
    pub schemas: &'a [Arc<Schema>],
    /// How long the whole body may take to arrive.
    pub timeout: Duration,
}

/// Read the whole body under `checks`, refusing at the first violation; the bytes are
/// returned only when every check passed.
pub async fn read_checked(
    body: CountedBody,
    declared: Option<u64>,
    checks: &BodyChecks<'_>,
) -> Result<Bytes, Rejection> {
    match tokio::time::timeout(checks.timeout, read_inner(body, declared, checks)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(Rejection::BodyTimeout {
            secs: checks.timeout.as_secs().max(1),
        }),
    }
}

async fn read_inner(
    mut body: CountedBody,
    declared: Option<u64>,
    checks: &BodyChecks<'_>,
) -> Result<Bytes, Rejection> {
    let too_large = Rejection::BodyTooLarge {
        limit: checks.max_bytes,
    };
    // Reserve what was declared (already checked against the limit), else grow as needed.
    let initial = declared.unwrap_or(0).min(checks.max_bytes);
    let mut buf = BytesMut::with_capacity(usize::try_from(initial).unwrap_or(0));
    let mut scanner = Scanner::new(checks.limits);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Rejection::BodyUnreadable)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not forwarded with a held body
        };
        if buf.len() as u64 + data.len() as u64 > checks.max_bytes {
            return Err(too_large);
        }
        scanner.feed(&data).map_err(scan_rejection)?;
        buf.extend_from_slice(&data);
    }
    scanner.finish().map_err(scan_rejection)?;
    let bytes = buf.freeze();
    if !checks.schemas.is_empty() {
        // The scanner bounded depth and size, so this parse is bounded too.
        // serde_json may still refuse what the scanner passed (a number out of f64 range).
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| Rejection::InvalidJson { offset: None })?;
        for schema in checks.schemas {
            schema.check(&doc).map_err(|v| Rejection::SchemaViolation {
                path: v.instance_path,
                keyword: v.keyword,
            })?;
        }
    }
    Ok(bytes)
}

fn scan_rejection(e: ScanError) -> Rejection {
    match e {
        ScanError::Limit { kind, limit } => Rejection::JsonLimitExceeded { kind, limit },
        ScanError::Syntax { offset } => Rejection::InvalidJson {
            offset: Some(offset),
        },
    }
}
