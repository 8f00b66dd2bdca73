//! A request body adapter both ends use on their way to the next hop: it says when the body has
//! been sent in full, so the app's timeout counts from then (a slow upload is not a slow app), and
//! it can clean the body's trailers like the headers were cleaned.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;

/// Resolves once the watched body has ended (fully sent, failed, or dropped). Cloneable, so each
/// attempt at sending the request can wait on it.
#[derive(Clone)]
pub struct BodySent(watch::Receiver<bool>);

impl BodySent {
    /// A body that is sent already (there is none).
    pub fn already() -> BodySent {
        BodySent(watch::channel(true).1)
    }

    pub async fn wait(mut self) {
        // An error means the sender was dropped with the body: it is over either way.
        let _ = self.0.wait_for(|sent| *sent).await;
    }
}

/// Wraps a body, reporting its end and passing its trailers through `clean_trailers`.
pub struct Watched<B> {
    inner: B,
    sent: Option<watch::Sender<bool>>,
    clean_trailers: fn(&mut HeaderMap),
}

impl<B: Body + Unpin> Watched<B> {
    pub fn new(inner: B, clean_trailers: fn(&mut HeaderMap)) -> (Watched<B>, BodySent) {
        let (tx, rx) = watch::channel(false);
        let mut watched = Watched {
            sent: Some(tx),
            inner,
            clean_trailers,
        };
        // An empty body may never be polled; it is sent already.
        if watched.inner.is_end_stream() {
            watched.finish();
        }
        (watched, BodySent(rx))
    }

    fn finish(&mut self) {
        if let Some(tx) = self.sent.take() {
            tx.send_replace(true);
        }
    }
}

/// For bodies whose trailers need no cleaning.
pub fn keep_trailers(_: &mut HeaderMap) {}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_trailers() {
                    Ok(mut trailers) => {
                        (this.clean_trailers)(&mut trailers);
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                };
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => {
                this.finish();
                Poll::Ready(other)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        if let Some(tx) = self.sent.take() {
            tx.send_replace(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, StreamBody};

    use super::*;

    fn drop_secret(h: &mut HeaderMap) {
        h.remove("x-secret");
    }

    #[tokio::test]
    async fn reports_the_end_and_cleans_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-secret", "1".parse().unwrap());
        trailers.insert("x-ok", "1".parse().unwrap());
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::trailers(trailers)),
        ];
        let (body, sent) = Watched::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            drop_secret,
        );
        let collected = body.collect().await.unwrap();
        sent.wait().await;
        let trailers = collected.trailers().unwrap();
        assert!(trailers.get("x-secret").is_none());
        assert!(trailers.get("x-ok").is_some());
    }

    #[tokio::test]
    async fn an_empty_body_is_sent_at_once() {
        let (_body, sent) = Watched::new(Empty::<Bytes>::new(), keep_trailers);
        sent.wait().await;
    }
}
