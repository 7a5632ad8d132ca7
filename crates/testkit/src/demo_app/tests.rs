use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::client::{h2c_get, http_get};

async fn listener() -> TcpListener {
    TcpListener::bind((crate::free_loopback_ip(), 0))
        .await
        .unwrap()
}

async fn start(config: AppConfig) -> AppHandle {
    spawn(config, listener().await)
}

fn app(name: &str, upstreams: &[&str]) -> AppConfig {
    AppConfig {
        name: name.to_owned(),
        upstream_uris: upstreams.iter().map(|uri| uri.to_string()).collect(),
        upstream_timeout: Duration::from_secs(5),
        ..AppConfig::default()
    }
}

async fn get_json(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let (status, response_headers, body) = http_get(&addr.to_string(), "", path, headers)
        .await
        .unwrap();
    assert_eq!(response_headers["content-type"], "application/json");
    (status, serde_json::from_slice(&body).unwrap())
}

/// A server that records the head of each request it gets and answers
/// every one with `response`.
struct Recorder {
    addr: SocketAddr,
    heads: tokio::sync::mpsc::UnboundedReceiver<String>,
    task: JoinHandle<()>,
}

impl Recorder {
    async fn start(response: &'static str) -> Self {
        let listener = listener().await;
        let addr = listener.local_addr().unwrap();
        let (tx, heads) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        Self { addr, heads, task }
    }

    async fn next_head(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), self.heads.recv())
            .await
            .expect("no request reached the recorder")
            .unwrap()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const PLAIN_OK: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

#[tokio::test]
async fn answers_any_path_with_its_report() {
    let config = AppConfig {
        version: "v2".into(),
        message: "hi there".into(),
        ..app("service-a", &[])
    };
    let app = start(config).await;
    let (status, body) = get_json(app.local_addr(), "/some/path?q=1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "service-a");
    assert_eq!(body["version"], "v2");
    assert_eq!(body["uri"], "/some/path?q=1");
    assert_eq!(body["type"], "HTTP");
    assert_eq!(body["body"], "hi there");
    assert_eq!(body["code"], 200);
    assert_eq!(
        body["ip_addresses"],
        serde_json::json!([app.local_addr().ip().to_string()])
    );
    assert!(body.get("upstream_calls").is_none());
    assert!(body.get("error").is_none());
    for field in ["start_time", "end_time", "duration"] {
        assert!(
            body[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}"
        );
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn speaks_h2c() {
    let app = start(app("service-a", &[])).await;
    let (status, _, body) = h2c_get(&app.local_addr().to_string(), "service-a", "/h2", &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["uri"], "/h2");
}

#[tokio::test]
async fn nests_upstream_reports_in_call_order() {
    let c = start(app("service-c", &[])).await;
    let b = start(app("service-b", &[])).await;
    let uri_b = format!("http://{}", b.local_addr());
    let uri_c = format!("http://{}/deep", c.local_addr());
    let a = start(app("service-a", &[&uri_c, &uri_b])).await;

    let (status, raw, body) = http_get(&a.local_addr().to_string(), "", "/", &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let json: Value = serde_json::from_slice(&body).unwrap();
    let calls = json["upstream_calls"].as_object().unwrap();
    assert_eq!(calls[&uri_b]["name"], "service-b");
    assert_eq!(calls[&uri_c]["name"], "service-c");
    assert_eq!(calls[&uri_c]["uri"], "/deep");
    // Keys appear in the order the calls were made.
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.find(&uri_c).unwrap() < text.find(&uri_b).unwrap());
    assert!(raw.contains_key("content-length"));
}

#[tokio::test]
async fn propagates_trace_headers_and_sets_host() {
    let mut recorder = Recorder::start(PLAIN_OK).await;
    let upstream = format!("http://{}/next", recorder.addr);
    let a = start(app("service-a", &[&upstream])).await;
    let (status, body) = get_json(
        a.local_addr(),
        "/",
        &[
            ("x-request-id", "req-1"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-sampled", "1"),
            ("authorization", "Bearer secret"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let head = recorder.next_head().await.to_ascii_lowercase();
    assert!(head.starts_with("get /next http/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("host: {}\r\n", recorder.addr)),
        "{head}"
    );
    assert!(head.contains("x-request-id: req-1\r\n"), "{head}");
    assert!(
        head.contains("traceparent: 00-0af7651916cd43dd8448eb211c80319c"),
        "{head}"
    );
    assert!(
        head.contains("x-b3-traceid: 80f198ee56343ba864fe8b2a57d3eff7\r\n"),
        "{head}"
    );
    assert!(head.contains("x-b3-sampled: 1\r\n"), "{head}");
    assert!(!head.contains("authorization"), "{head}");
    // A non-JSON answer is recorded as status and text.
    let call = &body["upstream_calls"][format!("http://{}/next", recorder.addr)];
    assert_eq!(call["code"], 200);
    assert_eq!(call["body"], "ok");
}

#[tokio::test]
async fn sends_absolute_form_to_the_proxy() {
    let mut proxy = Recorder::start(PLAIN_OK).await;
    let config = AppConfig {
        http_proxy: Some(format!("http://{}", proxy.addr)),
        ..app("service-a", &["http://service-b:80"])
    };
    let a = start(config).await;
    let (status, _) = get_json(a.local_addr(), "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let head = proxy.next_head().await.to_ascii_lowercase();
    assert!(
        head.starts_with("get http://service-b:80/ http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("host: service-b:80\r\n"), "{head}");
}

#[tokio::test]
async fn unreachable_upstream_fails_with_500() {
    let dead = format!("http://127.0.0.1:{}", crate::free_port());
    let config = AppConfig {
        // The injected-error code must not be used for upstream failures.
        error_code: 503,
        ..app("service-a", &[&dead])
    };
    let a = start(config).await;
    let (status, body) = get_json(a.local_addr(), "/", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["code"], 500);
    assert_eq!(body["error"], UPSTREAM_ERROR);
    let call = &body["upstream_calls"][&dead];
    assert_eq!(call["code"], -1);
    assert!(
        call["error"].as_str().unwrap().contains("connect"),
        "{call}"
    );
}

#[tokio::test]
async fn upstream_error_status_fails_with_500() {
    let failing = AppConfig {
        error_rate: 1.0,
        error_code: 503,
        ..app("service-b", &[])
    };
    let b = start(failing).await;
    let uri_b = format!("http://{}", b.local_addr());
    let a = start(app("service-a", &[&uri_b])).await;
    let (status, body) = get_json(a.local_addr(), "/", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let call = &body["upstream_calls"][&uri_b];
    assert_eq!(call["name"], "service-b");
    assert_eq!(call["code"], 503);
    assert_eq!(call["error"], INJECTED_ERROR);
}

#[tokio::test]
async fn injected_errors_skip_upstreams() {
    let mut recorder = Recorder::start(PLAIN_OK).await;
    let config = AppConfig {
        error_rate: 1.0,
        error_code: 418,
        ..app("service-a", &[&format!("http://{}", recorder.addr)])
    };
    let a = start(config).await;
    let (status, body) = get_json(a.local_addr(), "/", &[]).await;
    assert_eq!(status.as_u16(), 418);
    assert_eq!(body["code"], 418);
    assert_eq!(body["error"], INJECTED_ERROR);
    assert!(body.get("upstream_calls").is_none());
    assert!(recorder.heads.try_recv().is_err());
}

#[tokio::test]
async fn slow_upstream_times_out() {
    // Accepts and never answers.
    let silent = listener().await;
    let uri = format!("http://{}", silent.local_addr().unwrap());
    let config = AppConfig {
        upstream_timeout: Duration::from_millis(200),
        ..app("service-a", &[&uri])
    };
    let a = start(config).await;
    let (status, body) = get_json(a.local_addr(), "/", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let error = body["upstream_calls"][&uri]["error"].as_str().unwrap();
    assert!(error.contains("timed out"), "{error}");
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let app = start(app("service-a", &[])).await;
    let addr = app.local_addr();
    get_json(addr, "/", &[]).await;
    app.shutdown().await.unwrap();
    let err = http_get(&addr.to_string(), "", "/", &[]).await.unwrap_err();
    assert!(
        matches!(err, crate::client::ClientError::Connect { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn serves_keep_alive_requests_with_bodies() {
    let app = start(app("service-a", &[])).await;
    let stream = tokio::net::TcpStream::connect(app.local_addr())
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let request = Request::post(format!("/post/{i}"))
            .header("host", "service-a")
            .body(http_body_util::Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["uri"], format!("/post/{i}"));
    }
}
