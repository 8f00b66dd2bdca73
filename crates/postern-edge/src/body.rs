//! The body of a response the edge sends to a user.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::tunnels::InFlight;

/// Either the app's streamed response, which keeps its tunnel counted as busy until it ends, or a
/// page the edge wrote itself.
pub enum EdgeBody {
    App {
        body: Incoming,
        in_flight: Option<InFlight>,
    },
    Page(Full<Bytes>),
}

impl EdgeBody {
    pub fn page(bytes: impl Into<Bytes>) -> EdgeBody {
        EdgeBody::Page(Full::new(bytes.into()))
    }
}

impl Body for EdgeBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            EdgeBody::App { body, in_flight } => {
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = polled {
                    // The stream is over: the tunnel is no longer busy with it.
                    in_flight.take();
                }
                polled
            }
            EdgeBody::Page(full) => match Pin::new(full).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EdgeBody::App { body, .. } => body.is_end_stream(),
            EdgeBody::Page(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EdgeBody::App { body, .. } => body.size_hint(),
            EdgeBody::Page(full) => full.size_hint(),
        }
    }
}
