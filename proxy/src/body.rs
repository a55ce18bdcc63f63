//! The response body type: a backend stream or a proxy-made body, counted as it is sent, that
//! writes the access-log line when it ends or is dropped (the client went away).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::access_log::AccessRecord;
use crate::rewrite::stream::RewriteBody;

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a response carries: the backend's stream (as is, or rewritten as it streams), or a body
/// the proxy built (problem answers, preflights, buffered rewrites).
pub type Inner = Either<Backend, Full<Bytes>>;

/// A backend's body on its way to the client.
#[derive(Debug)]
pub enum Backend {
    /// Passed on as it arrives.
    Plain(Incoming),
    /// With the product's `responseRewrite` applied as it streams (see [`crate::rewrite`]).
    Rewritten(Box<RewriteBody<Incoming>>),
}

impl Body for Backend {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Backend::Plain(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Backend::Rewritten(b) => Pin::new(b.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Backend::Plain(b) => b.is_end_stream(),
            Backend::Rewritten(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Backend::Plain(b) => b.size_hint(),
            Backend::Rewritten(b) => b.size_hint(),
        }
    }
}

/// A response body that logs the request once it has been sent.
#[derive(Debug)]
pub struct LoggedBody {
    inner: Inner,
    bytes: u64,
    complete: bool,
    record: Option<AccessRecord>,
}

impl LoggedBody {
    /// Wrap `inner`; `record` is emitted when the body ends or is dropped.
    pub fn new(inner: Inner, record: Option<AccessRecord>) -> Self {
        LoggedBody {
            inner,
            bytes: 0,
            complete: false,
            record,
        }
    }

    /// A proxy-made body without logging (admin endpoints).
    pub fn full(bytes: Bytes) -> Self {
        Self::new(Either::Right(Full::new(bytes)), None)
    }

    fn finish(&mut self) {
        if let Some(record) = self.record.take() {
            record.emit(self.bytes, self.complete);
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.complete = true;
                    this.finish();
                }
            }
            Poll::Ready(None) => {
                this.complete = true;
                this.finish();
            }
            Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.complete = true;
        }
        self.finish();
    }
}
