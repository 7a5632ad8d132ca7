//! The upstream every arm ends at: a fixed response of a fixed size, over
//! HTTP/1.1 and h2c on one port, doing as little as possible so that it is
//! never what limits a measurement.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Serves `body_bytes` of `x` to every request on `listener`, forever.
pub async fn serve(listener: TcpListener, body_bytes: usize) -> std::io::Result<()> {
    let body = Bytes::from(vec![b'x'; body_bytes]);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let response = Response::builder()
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(Full::new(body.clone()))
                    .expect("static response");
                async move {
                    // Read the request body before answering: a server that
                    // answers early and closes makes proxies fail the
                    // request (503 UC), which is not what is measured here.
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Runs the upstream on a runtime of `threads` worker threads (1: a
/// current-thread runtime, like a single nginx worker).
pub fn run(listen: SocketAddr, body_bytes: usize, threads: usize) -> anyhow::Result<()> {
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let listener = TcpListener::bind(listen).await?;
        serve(listener, body_bytes).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_http1_and_h2c_with_the_fixed_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, 1024));
        let target = addr.to_string();
        let (status, _, body) = mizzen_testkit::http_get(&target, "", "/", &[])
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(body.len(), 1024);
        let (status, _, body) = mizzen_testkit::h2c_get(&target, "", "/x", &[])
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(body.len(), 1024);
    }
}
