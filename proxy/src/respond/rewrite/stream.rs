//! The streaming rewrite body: inflate (when gzip), replace with a bounded carry-over, send on.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};

use super::gzip::Inflater;
use super::scan::{Replacer, Rules};
use super::RewriteError;
use crate::message::body::BoxError;

/// A backend body with the product's replacements applied as it streams.
#[derive(Debug)]
pub struct RewriteBody<B> {
    inner: B,
    inflater: Option<Inflater>,
    replacer: Replacer,
    /// Trailers received, sent after the last data.
    trailers: Option<Frame<Bytes>>,
    done: bool,
}

impl<B> RewriteBody<B> {
    /// Rewrite `inner`; `inflate` holds a gzip decoder when the body is gzip-encoded.
    pub fn new(inner: B, rules: Arc<Rules>, inflate: Option<Inflater>) -> Self {
        RewriteBody {
            inner,
            inflater: inflate,
            replacer: Replacer::new(rules),
            trailers: None,
            done: false,
        }
    }

    fn data(&mut self, chunk: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let mut out = Vec::new();
        match &mut self.inflater {
            Some(inf) => {
                let text = inf.push(chunk)?;
                self.replacer.push(&text, &mut out);
            }
            None => self.replacer.push(chunk, &mut out),
        }
        Ok(out)
    }

    fn end(&mut self) -> Result<Vec<u8>, RewriteError> {
        self.done = true;
        let mut out = Vec::new();
        if let Some(inf) = &mut self.inflater {
            let text = inf.finish()?;
            self.replacer.push(&text, &mut out);
        }
        self.replacer.finish(&mut out);
        Ok(out)
    }
}

impl<B> Body for RewriteBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(Ok));
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(f) => f,
            };
            // An error ends the body with an error, never with a half-rewritten "complete" body:
            // the client sees the transfer fail.
            let out = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.data(&data),
                    Err(trailers) => {
                        this.trailers = Some(trailers);
                        this.end()
                    }
                },
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => this.end(),
            };
            match out {
                Ok(bytes) if !bytes.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes)))))
                }
                Ok(_) => {}
                Err(e) => {
                    this.done = true;
                    this.trailers = None;
                    tracing::warn!(error = %e, "response rewrite failed; body aborted");
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::io::Write;

    use http_body_util::BodyExt;
    use tollgate_crds::table::RewriteEntry;

    /// A body that yields the given frames, one per poll.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }
    }

    fn data(parts: &[&[u8]]) -> Frames {
        Frames(
            parts
                .iter()
                .map(|p| Frame::data(Bytes::copy_from_slice(p)))
                .collect(),
        )
    }

    fn rules() -> Arc<Rules> {
        Arc::new(Rules::new(&[RewriteEntry {
            from: "http://weather-api.internal".into(),
            to: "https://api.example.com".into(),
        }]))
    }

    async fn collect<B>(b: B) -> Result<Vec<u8>, BoxError>
    where
        B: Body<Data = Bytes, Error = BoxError>,
    {
        Ok(b.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn plain_body_split_inside_the_pattern() {
        let body = RewriteBody::new(
            data(&[b"{\"u\":\"http", b"://weather-api.inter", b"nal/x\"}"]),
            rules(),
            None,
        );
        assert_eq!(
            collect(body).await.unwrap(),
            b"{\"u\":\"https://api.example.com/x\"}"
        );
    }

    #[tokio::test]
    async fn gzip_body_is_inflated_and_rewritten_and_trailers_follow() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b"see http://weather-api.internal/a and http://weather-api.internal/b")
            .unwrap();
        let z = e.finish().unwrap();
        let mut frames = data(&z.chunks(5).collect::<Vec<_>>());
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        frames.0.push_back(Frame::trailers(trailers));
        let body = RewriteBody::new(frames, rules(), Some(Inflater::new(1 << 20)));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-t"], "1");
        assert_eq!(
            collected.to_bytes(),
            &b"see https://api.example.com/a and https://api.example.com/b"[..]
        );
    }

    #[tokio::test]
    async fn corrupt_gzip_fails_the_body() {
        let body = RewriteBody::new(
            data(&[b"\x1f\x8b\x08\x00garbage-garbage"]),
            rules(),
            Some(Inflater::new(1 << 20)),
        );
        assert!(collect(body).await.is_err());
    }
}
