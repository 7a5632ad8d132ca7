//! The app's answers beyond fake-service's JSON: a unary gRPC method and a
//! WebSocket echo, so that tests can drive those protocols through a mesh.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::AppConfig;

/// A response body: bytes, then optional trailers (gRPC's status).
#[derive(Debug)]
pub struct AppBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl AppBody {
    pub fn full(data: Bytes) -> AppBody {
        AppBody {
            data: (!data.is_empty()).then_some(data),
            trailers: None,
        }
    }

    fn empty() -> AppBody {
        AppBody {
            data: None,
            trailers: None,
        }
    }
}

impl Body for AppBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(d) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

pub fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Any unary call: the answer is one length-prefixed message holding
/// `NAME-VERSION`, then `grpc-status: 0` in the trailers (14, UNAVAILABLE,
/// for an injected error, as a trailers-only response).
pub async fn grpc_unary(
    request: Request<Incoming>,
    config: &AppConfig,
    injected: bool,
) -> Response<AppBody> {
    let _ = request.into_body().collect().await;
    let mut response = Response::new(AppBody::empty());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    if injected {
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from_static("14"));
        return response;
    }
    let message = format!("{}-{}", config.name, config.version);
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message.as_bytes());
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    *response.body_mut() = AppBody {
        data: Some(Bytes::from(framed)),
        trailers: Some(trailers),
    };
    response
}

/// Switches protocols and echoes every byte back until the client closes.
pub fn websocket_echo(request: &mut Request<Incoming>) -> Response<AppBody> {
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut io = TokioIo::new(upgraded);
        let mut buf = [0u8; 4096];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut response = Response::new(AppBody::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response
        .headers_mut()
        .insert(UPGRADE, HeaderValue::from_static("websocket"));
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    response
}
