//! Calls to the app's upstreams.

use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request};
use serde_json::{Value, json};

use super::config::{UpstreamUri, proxy_authority};
use crate::client::{self, Protocol};

/// Headers a service must copy from its request to its upstream calls for
/// the mesh to stitch one trace together; Istio's sample apps copy the same.
const TRACE_HEADERS: [&str; 4] = ["x-request-id", "traceparent", "tracestate", "b3"];
const B3_PREFIX: &str = "x-b3-";

/// What one upstream call produced, as nested under `upstream_calls`.
pub(crate) struct UpstreamResult {
    pub uri: String,
    /// The upstream's JSON, or a small object describing its answer.
    pub body: Value,
    /// False on connection failure, timeout or a non-2xx status.
    pub ok: bool,
}

/// How the app reaches its upstreams.
pub(crate) struct Upstreams {
    uris: Vec<String>,
    /// `host:port` of the forward proxy, if any.
    proxy: Option<String>,
    timeout: Duration,
}

impl Upstreams {
    pub fn new(uris: Vec<String>, proxy: Option<&str>, timeout: Duration) -> Self {
        Self {
            uris,
            proxy: proxy.and_then(proxy_authority),
            timeout,
        }
    }

    /// Calls every upstream in order, each after the previous one finished,
    /// so the order of requests seen downstream is deterministic.
    pub async fn call_all(&self, incoming: &HeaderMap) -> Vec<UpstreamResult> {
        let propagated = trace_headers(incoming);
        let mut results = Vec::with_capacity(self.uris.len());
        for uri in &self.uris {
            results.push(self.call(uri, &propagated).await);
        }
        results
    }

    async fn call(&self, uri: &str, propagated: &HeaderMap) -> UpstreamResult {
        let failed = |error: String| UpstreamResult {
            uri: uri.to_owned(),
            body: json!({ "uri": uri, "code": -1, "error": error }),
            ok: false,
        };
        // Checked when the config was read; an unparsable URI here means the
        // config was built by hand.
        let Some(target) = UpstreamUri::parse(uri) else {
            return failed(format!("invalid upstream URI {uri:?}"));
        };
        let (connect_to, request_uri) = match &self.proxy {
            // A forward proxy needs the absolute form to know where to go.
            Some(proxy) => (
                proxy.clone(),
                format!("http://{}{}", target.authority, target.path),
            ),
            None => (target.authority.clone(), target.path.clone()),
        };
        let mut request = Request::new(Bytes::new());
        *request.method_mut() = Method::GET;
        match request_uri.parse() {
            Ok(parsed) => *request.uri_mut() = parsed,
            Err(err) => return failed(format!("invalid upstream URI {uri:?}: {err}")),
        }
        let headers = request.headers_mut();
        headers.extend(propagated.clone());
        match HeaderValue::from_str(&target.authority) {
            Ok(host) => headers.insert(HOST, host),
            Err(err) => return failed(format!("invalid upstream host {uri:?}: {err}")),
        };

        let call = client::send(&connect_to, Protocol::Http1, request);
        let response = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return failed(err.to_string()),
            Err(_) => return failed(format!("timed out after {:?}", self.timeout)),
        };
        let status = response.status();
        let body = match serde_json::from_slice::<Value>(response.body()) {
            Ok(body @ Value::Object(_)) => body,
            _ => json!({
                "uri": uri,
                "code": status.as_u16(),
                "body": String::from_utf8_lossy(response.body()),
            }),
        };
        UpstreamResult {
            uri: uri.to_owned(),
            body,
            ok: status.is_success(),
        }
    }
}

fn trace_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in incoming {
        let name_str = name.as_str();
        if TRACE_HEADERS.contains(&name_str) || name_str.starts_with(B3_PREFIX) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_only_trace_headers() {
        let mut incoming = HeaderMap::new();
        for (name, value) in [
            ("x-request-id", "r1"),
            ("traceparent", "00-abc-def-01"),
            ("b3", "a-b-1"),
            ("x-b3-traceid", "t"),
            ("x-b3-spanid", "s"),
            ("authorization", "secret"),
            ("x-forwarded-for", "1.2.3.4"),
            ("host", "a"),
        ] {
            incoming.append(name, value.parse().unwrap());
        }
        let copied = trace_headers(&incoming);
        let mut names: Vec<_> = copied.keys().map(|n| n.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "b3",
                "traceparent",
                "x-b3-spanid",
                "x-b3-traceid",
                "x-request-id"
            ]
        );
    }
}
