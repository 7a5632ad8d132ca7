//! `envoy.filters.listener.http_inspector`: tells HTTP/1.x and h2c apart
//! from other protocols by peeking at a connection's first bytes. Nothing is
//! consumed: whichever filter chain is chosen reads the bytes again from the
//! socket, so the HTTP and TCP paths stay plain `TcpStream`s.
//!
//! h2c is recognised by the HTTP/2 connection preface; HTTP/1.x by a request
//! line that Envoy's inspector also accepts (checked against Envoy 1.40 in
//! `tests/envoy_sidecar.rs`): a token method, a request target in origin
//! (`/...`), asterisk, absolute (`scheme://...`) or, for CONNECT, authority
//! form, and `HTTP/d.d` (`http/1.1` for 1.1, `http/1.0` for any other
//! version or none). A first byte that cannot start a method decides "not
//! HTTP" at once; otherwise the inspector waits for the end of the line. A
//! client that sends nothing (a server-first protocol) leaves it waiting
//! until the listener's `listener_filters_timeout`.

use std::io;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

pub const HTTP11: &str = "http/1.1";
pub const HTTP10: &str = "http/1.0";
pub const H2C: &str = "h2c";

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How many bytes the inspector looks at before giving up on finding the end
/// of a request line (and closing the connection, as Envoy does).
pub const MAX_INSPECT: usize = 8192;

/// What the bytes seen so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// `http/1.1`, `http/1.0` or `h2c`.
    Protocol(&'static str),
    /// Not HTTP/1.x or h2c.
    NotHttp,
    /// Could still be HTTP: more bytes are needed.
    NeedMore,
}

/// Classifies the first bytes of a connection.
pub fn detect(data: &[u8]) -> Detection {
    if data.is_empty() {
        return Detection::NeedMore;
    }
    let n = data.len().min(PREFACE.len());
    if data[..n] == PREFACE[..n] {
        return if data.len() >= PREFACE.len() {
            Detection::Protocol(H2C)
        } else {
            Detection::NeedMore
        };
    }
    // The method is checked as it arrives, so binary protocols are told
    // apart at their first byte.
    let method_end = data
        .iter()
        .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(data.len());
    if method_end == 0 || !data[..method_end].iter().all(|b| is_tchar(*b)) {
        return Detection::NotHttp;
    }
    let Some(newline) = data.iter().position(|b| *b == b'\n') else {
        return Detection::NeedMore;
    };
    let line = &data[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    request_line(line)
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `METHOD SP target [SP HTTP/d.d]`, spaces and tabs as separators.
fn request_line(line: &[u8]) -> Detection {
    let parts: Vec<&[u8]> = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|p| !p.is_empty())
        .collect();
    let (method, target, version) = match parts.as_slice() {
        [m, t] => (*m, *t, None),
        [m, t, v] => (*m, *t, Some(*v)),
        _ => return Detection::NotHttp,
    };
    if !valid_target(method, target) {
        return Detection::NotHttp;
    }
    match version {
        None => Detection::Protocol(HTTP10),
        Some(b"HTTP/1.1") => Detection::Protocol(HTTP11),
        Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor])
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Detection::Protocol(HTTP10)
        }
        Some(_) => Detection::NotHttp,
    }
}

fn valid_target(method: &[u8], target: &[u8]) -> bool {
    if target.iter().any(|b| *b == 0 || *b >= 0x7f) {
        return false;
    }
    if target.starts_with(b"/") || target == b"*" {
        return true;
    }
    // absolute-form: scheme "://" ...
    if let Some(i) = target.windows(3).position(|w| w == b"://") {
        let scheme = &target[..i];
        return !scheme.is_empty()
            && scheme[0].is_ascii_alphabetic()
            && scheme
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b));
    }
    // authority-form, for CONNECT only: host:port
    method == b"CONNECT"
        && target
            .rsplit(|b| *b == b':')
            .next()
            .is_some_and(|port| !port.is_empty() && port.iter().all(u8::is_ascii_digit))
        && target.contains(&b':')
}

/// The inspector's verdict for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniffed {
    Protocol(&'static str),
    /// Decided: not HTTP/1.x or h2c.
    Other,
    /// The client closed its side before the inspector could decide; like
    /// Envoy, the connection is then closed.
    Closed,
    /// `listener_filters_timeout` expired first.
    TimedOut,
}

/// Peeks at `stream` until [`detect`] decides or `timeout` expires.
pub(crate) async fn sniff(stream: &TcpStream, timeout: Option<Duration>) -> io::Result<Sniffed> {
    let work = peek_until_decided(stream);
    match timeout {
        None => work.await,
        Some(t) => match tokio::time::timeout(t, work).await {
            Ok(r) => r,
            Err(_) => Ok(Sniffed::TimedOut),
        },
    }
}

async fn peek_until_decided(stream: &TcpStream) -> io::Result<Sniffed> {
    // Peeking goes through a duplicate of the socket's descriptor, whose std
    // `peek` needs no unsafe code; it shares the socket (and its non-blocking
    // mode) with `stream`, so readiness still comes from `stream`.
    let peeker: std::net::TcpStream = socket2::SockRef::from(stream).try_clone()?.into();
    let mut buf = vec![0u8; MAX_INSPECT];
    let mut seen = 0;
    loop {
        let ready = stream.ready(Interest::READABLE).await?;
        // Peeking leaves the bytes queued, so the socket stays readable: when
        // nothing new arrived, answering WouldBlock clears the readiness and
        // the next wait lasts until more bytes come (tokio only clears it if
        // no new event came in since the peek started).
        let peeked = stream.try_io(Interest::READABLE, || {
            let n = peeker.peek(&mut buf)?;
            if n != 0 && n == seen {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match peeked {
            Ok(0) => return Ok(Sniffed::Closed),
            Ok(n) => {
                seen = n;
                match detect(&buf[..n]) {
                    Detection::Protocol(p) => return Ok(Sniffed::Protocol(p)),
                    Detection::NotHttp => return Ok(Sniffed::Other),
                    Detection::NeedMore if n >= buf.len() => return Ok(Sniffed::Closed),
                    Detection::NeedMore => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // No new bytes will come after the peer's FIN.
                if ready.is_read_closed() {
                    return Ok(Sniffed::Closed);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Each row was checked against Envoy 1.40's inspector (see
    /// `tests/envoy_sidecar.rs`, which compares the two on these inputs).
    #[test]
    fn detection_table() {
        use Detection::{NeedMore, NotHttp, Protocol};
        let cases: &[(&[u8], Detection)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Protocol(HTTP11)),
            (b"GET / HTTP/1.0\r\n", Protocol(HTTP10)),
            (b"get / HTTP/1.1\r\n", Protocol(HTTP11)),
            (b"GET / HTTP/2.0\r\n", Protocol(HTTP10)),
            (b"GET / HTTP/0.9\r\n", Protocol(HTTP10)),
            (b"GET /\r\n", Protocol(HTTP10)),
            (b"EHLO /\r\n", Protocol(HTTP10)),
            (b"GET *\r\n", Protocol(HTTP10)),
            (b"M-SEARCH * HTTP/1.1\r\n", Protocol(HTTP11)),
            (b"GET / HTTP/1.1\n", Protocol(HTTP11)),
            (b"GET  / HTTP/1.1\r\n", Protocol(HTTP11)),
            (b"GET\t/\tHTTP/1.1\r\n", Protocol(HTTP11)),
            (b"GET / HTTP/1.1 \r\n", Protocol(HTTP11)),
            (b"GET http://x/ HTTP/1.1\r\n", Protocol(HTTP11)),
            (b"OPTIONS * HTTP/1.1\r\n", Protocol(HTTP11)),
            (b"CONNECT a:443 HTTP/1.1\r\n", Protocol(HTTP11)),
            (b"GET //x HTTP/1.1\r\n", Protocol(HTTP11)),
            (b"!#$ / HTTP/1.1\r\n", Protocol(HTTP11)),
            (b"1GET / HTTP/1.1\r\n", Protocol(HTTP11)),
            (b"PRI * HTTP/1.1\r\n", Protocol(HTTP11)),
            (PREFACE, Protocol(H2C)),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
                Protocol(H2C),
            ),
            // Could still be HTTP: wait for the end of the line.
            (b"", NeedMore),
            (b"GE", NeedMore),
            (b"x", NeedMore),
            (b"-", NeedMore),
            (b"in", NeedMore),
            (b"PRX", NeedMore),
            (b"get /", NeedMore),
            (b"GET \x01", NeedMore),
            (b"GET / HTTP/1.1\r", NeedMore),
            (b"PRI * HTTP/2.0\r\n", NeedMore),
            // Not HTTP/1.x or h2c.
            (b"EHLO there\r\n", NotHttp),
            (b"hello\r\n", NotHttp),
            (b"GET\r\n", NotHttp),
            (b"A B C\r\n", NotHttp),
            (b"hello world foo bar\r\n", NotHttp),
            (b"GET / HTTP/1.1 x\r\n", NotHttp),
            (b"GET / HTTP/3\r\n", NotHttp),
            (b"GET / HTTP/10.1\r\n", NotHttp),
            (b"GET / HTTP/1.10\r\n", NotHttp),
            (b"GET / http/1.1\r\n", NotHttp),
            (b"GET / FOO/1.1\r\n", NotHttp),
            (b"GET there HTTP/1.1\r\n", NotHttp),
            (b"GET x:443 HTTP/1.1\r\n", NotHttp),
            (b"GET ?a HTTP/1.1\r\n", NotHttp),
            (b"GET HTTP/1.1\r\n", NotHttp),
            (b"GET /a\x7f HTTP/1.1\r\n", NotHttp),
            (b"GET /\xc3\xa9 HTTP/1.1\r\n", NotHttp),
            (b"G@T / HTTP/1.1\r\n", NotHttp),
            (b"\r\nGET / HTTP/1.1\r\n", NotHttp),
            (b" GET / HTTP/1.1\r\n", NotHttp),
            (b"\tGET / HTTP/1.1\r\n", NotHttp),
            (b"\x16\x03\x01\x00\x05hello", NotHttp),
            (b"\x00\x00\x00\x01", NotHttp),
            (b"G\x00", NotHttp),
            (b"\x7f", NotHttp),
            (b"{\"json\": 1}\n", NotHttp),
            (b"SSH-2.0-OpenSSH_9.6\r\n", NotHttp),
        ];
        for (data, want) in cases {
            assert_eq!(detect(data), *want, "{:?}", String::from_utf8_lossy(data));
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.unwrap(), s.unwrap().0)
    }

    #[tokio::test]
    async fn sniffs_without_consuming() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let got = sniff(&server, Some(Duration::from_secs(5))).await.unwrap();
        assert_eq!(got, Sniffed::Protocol(HTTP11));
        let mut buf = [0u8; 64];
        let n = server.peek(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn waits_for_more_bytes_of_a_split_request_line() {
        let (mut client, server) = pair().await;
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
            client
        });
        let got = sniff(&server, Some(Duration::from_secs(5))).await.unwrap();
        assert_eq!(got, Sniffed::Protocol(H2C));
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn silent_client_times_out_and_closed_client_decides() {
        let (_client, server) = pair().await;
        let got = sniff(&server, Some(Duration::from_millis(100)))
            .await
            .unwrap();
        assert_eq!(got, Sniffed::TimedOut);
        let (mut client, server) = pair().await;
        client.write_all(b"GET /x").await.unwrap();
        client.shutdown().await.unwrap();
        let got = sniff(&server, Some(Duration::from_secs(5))).await.unwrap();
        assert_eq!(got, Sniffed::Closed);
        // Decided before the close: the decision stands.
        let (mut client, server) = pair().await;
        client.write_all(b"SSH-2.0-x\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let got = sniff(&server, Some(Duration::from_secs(5))).await.unwrap();
        assert_eq!(got, Sniffed::Other);
    }
}
