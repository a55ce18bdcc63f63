//! The body every response is sent with: counts the bytes sent and writes the access-log line
//! when the body ends or is dropped (the client went away).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};

use crate::message::body::BoxError;
use crate::observe::access_log::AccessRecord;
use crate::respond::body::Inner;

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
            if let Some(export) = &record.span {
                let facts = record.span_facts(self.bytes, self.complete);
                export.finish(&record.trace, record.started, &facts);
            }
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
