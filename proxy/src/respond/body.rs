//! The response body type: a backend stream or a proxy-made body, counted as it is sent, that
//! writes the access-log line when it ends or is dropped (the client went away).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::message::body::BoxError;
use crate::respond::rewrite::stream::RewriteBody;

/// What a response carries: the backend's stream (as is, or rewritten as it streams), or a body
/// the proxy built (problem answers, preflights, buffered rewrites).
pub type Inner = Either<Backend, Full<Bytes>>;

/// A backend's body on its way to the client.
#[derive(Debug)]
pub enum Backend {
    /// Passed on as it arrives.
    Plain(Incoming),
    /// With the product's `responseRewrite` applied as it streams (see [`crate::respond::rewrite`]).
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
