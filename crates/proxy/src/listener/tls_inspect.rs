//! `envoy.filters.listener.tls_inspector`: recognises a TLS ClientHello at
//! the start of a connection and reads its server name (SNI) and ALPN list,
//! by peeking, so that nothing is consumed: the chosen filter chain (a TCP
//! proxy, for TLS passed through) reads the handshake again from the socket.
//!
//! A connection whose first bytes are not a TLS handshake record keeps the
//! transport protocol `raw_buffer`; one that is gets `tls`, whether or not
//! it names a server. The ClientHello may span several handshake records;
//! the inspector reads up to [`MAX_CLIENT_HELLO`] bytes (Envoy's default
//! `max_client_hello_size`) and gives up on anything larger, as Envoy does
//! (closing the connection).

use std::io;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Envoy's transport protocol name for a detected TLS handshake.
pub const TLS: &str = "tls";
/// The largest ClientHello the inspector reads (Envoy's default).
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// What a ClientHello says about the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the server_name extension, lowercased.
    pub server_name: Option<String>,
    /// The ALPN protocols offered, in the client's order.
    pub alpn: Vec<String>,
}

/// What the bytes seen so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    Tls(ClientHello),
    /// Not a TLS handshake (or a malformed one).
    NotTls,
    NeedMore,
}

/// Classifies the first bytes of a connection.
pub fn detect(data: &[u8]) -> Detection {
    // The handshake message, reassembled from the records seen so far.
    let mut message = Vec::new();
    let mut rest = data;
    loop {
        if rest.is_empty() {
            return Detection::NeedMore;
        }
        if rest[0] != RECORD_HANDSHAKE {
            return Detection::NotTls;
        }
        if rest.len() >= 2 && rest[1] != 3 {
            return Detection::NotTls;
        }
        if rest.len() < 5 {
            return Detection::NeedMore;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 {
            return Detection::NotTls;
        }
        let available = (rest.len() - 5).min(len);
        message.extend_from_slice(&rest[5..5 + available]);
        if !message.is_empty() && message[0] != HANDSHAKE_CLIENT_HELLO {
            return Detection::NotTls;
        }
        if message.len() >= 4 {
            let body_len = (usize::from(message[1]) << 16)
                | (usize::from(message[2]) << 8)
                | usize::from(message[3]);
            if body_len + 4 > MAX_CLIENT_HELLO {
                return Detection::NotTls;
            }
            if message.len() >= body_len + 4 {
                return match parse_client_hello(&message[4..4 + body_len]) {
                    Some(hello) => Detection::Tls(hello),
                    None => Detection::NotTls,
                };
            }
        }
        if available < len {
            return Detection::NeedMore;
        }
        rest = &rest[5 + len..];
    }
}

/// A cursor over a ClientHello body; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

fn parse_client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let version = r.take(2)?;
    if version[0] != 3 {
        return None;
    }
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut hello = ClientHello::default();
    if r.0.is_empty() {
        return Some(hello);
    }
    let mut extensions = Reader(r.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = Reader(extensions.vec16()?);
        match kind {
            EXT_SERVER_NAME => {
                let mut names = Reader(data.vec16()?);
                while !names.0.is_empty() {
                    let name_type = names.u8()?;
                    let name = names.vec16()?;
                    if name_type == 0 && hello.server_name.is_none() {
                        let name = std::str::from_utf8(name).ok()?;
                        hello.server_name = Some(name.to_ascii_lowercase());
                    }
                }
            }
            EXT_ALPN => {
                let mut list = Reader(data.vec16()?);
                while !list.0.is_empty() {
                    let p = list.vec8()?;
                    hello.alpn.push(String::from_utf8_lossy(p).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

/// The inspector's verdict for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inspected {
    Tls(ClientHello),
    NotTls,
    /// The peer closed before the inspector could decide, or the
    /// ClientHello is too large.
    Closed,
    TimedOut,
}

/// Peeks at `stream` until [`detect`] decides or `timeout` expires.
pub(crate) async fn inspect(
    stream: &TcpStream,
    timeout: Option<Duration>,
) -> io::Result<Inspected> {
    let work = peek_until_decided(stream);
    match timeout {
        None => work.await,
        Some(t) => match tokio::time::timeout(t, work).await {
            Ok(r) => r,
            Err(_) => Ok(Inspected::TimedOut),
        },
    }
}

async fn peek_until_decided(stream: &TcpStream) -> io::Result<Inspected> {
    // As in the HTTP inspector: peek through a duplicate of the descriptor,
    // wait for readiness on `stream`.
    let peeker: std::net::TcpStream = socket2::SockRef::from(stream).try_clone()?.into();
    // Room for a few records; grown when a larger ClientHello fills it.
    let cap = MAX_CLIENT_HELLO + 5 * 8;
    let mut buf = vec![0u8; 4096];
    let mut seen = 0;
    let mut wait = true;
    loop {
        let closed = if wait {
            stream.ready(Interest::READABLE).await?.is_read_closed()
        } else {
            false
        };
        wait = true;
        let peeked = stream.try_io(Interest::READABLE, || {
            let n = peeker.peek(&mut buf)?;
            if n != 0 && n == seen {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match peeked {
            Ok(0) => return Ok(Inspected::Closed),
            Ok(n) => {
                seen = n;
                match detect(&buf[..n]) {
                    Detection::Tls(hello) => return Ok(Inspected::Tls(hello)),
                    Detection::NotTls => return Ok(Inspected::NotTls),
                    Detection::NeedMore if n < buf.len() => {}
                    Detection::NeedMore if buf.len() < cap => {
                        // The peek saw only what fitted: look again at once.
                        buf.resize((buf.len() * 4).min(cap), 0);
                        wait = false;
                    }
                    Detection::NeedMore => return Ok(Inspected::Closed),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if closed {
                    return Ok(Inspected::Closed);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello record with the given SNI and ALPN.
    pub(crate) fn client_hello(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(sni) = sni {
            let name = sni.as_bytes();
            let mut list = vec![0u8];
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&list);
            ext.extend_from_slice(&EXT_SERVER_NAME.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(&data);
        }
        if !alpn.is_empty() {
            let mut list = Vec::new();
            for p in alpn {
                list.push(p.len() as u8);
                list.extend_from_slice(p.as_bytes());
            }
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&list);
            ext.extend_from_slice(&EXT_ALPN.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(&data);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut message = vec![HANDSHAKE_CLIENT_HELLO, 0];
        message.extend_from_slice(&(body.len() as u16).to_be_bytes());
        message.extend_from_slice(&body);
        let mut record = vec![RECORD_HANDSHAKE, 3, 1];
        record.extend_from_slice(&(message.len() as u16).to_be_bytes());
        record.extend_from_slice(&message);
        record
    }

    #[test]
    fn reads_sni_and_alpn() {
        let hello = client_hello(Some("API.Example.com"), &["h2", "http/1.1"]);
        assert_eq!(
            detect(&hello),
            Detection::Tls(ClientHello {
                server_name: Some("api.example.com".into()),
                alpn: vec!["h2".into(), "http/1.1".into()],
            })
        );
        assert_eq!(
            detect(&client_hello(None, &[])),
            Detection::Tls(ClientHello::default())
        );
        // Every prefix asks for more.
        for n in 0..hello.len() {
            assert_eq!(detect(&hello[..n]), Detection::NeedMore, "prefix {n}");
        }
    }

    #[test]
    fn reassembles_a_hello_split_over_records() {
        let hello = client_hello(Some("a.example"), &[]);
        let message = &hello[5..];
        let (first, second) = message.split_at(10);
        let mut split = Vec::new();
        for part in [first, second] {
            split.extend_from_slice(&[RECORD_HANDSHAKE, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert!(
            matches!(detect(&split), Detection::Tls(h) if h.server_name.as_deref() == Some("a.example"))
        );
    }

    #[test]
    fn other_protocols_are_not_tls() {
        for data in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x02\x00",
            b"\x16\x03\x01\x00\x00",
            b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",
            b"SSH-2.0-x\r\n",
        ] {
            assert_eq!(detect(data), Detection::NotTls, "{data:?}");
        }
        // A truncated ClientHello body is malformed.
        let mut bad = client_hello(Some("a"), &[]);
        bad[8] = 10; // body length 10: ends inside the random
        bad[3] = 0;
        bad[4] = 14;
        bad.truncate(5 + 14);
        assert_eq!(detect(&bad), Detection::NotTls);
    }

    #[tokio::test]
    async fn inspects_without_consuming() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (mut client, server) = (c.unwrap(), s.unwrap().0);
        let hello = client_hello(Some("b.example"), &["h2"]);
        client.write_all(&hello[..20]).await.unwrap();
        let rest = hello[20..].to_vec();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(&rest).await.unwrap();
            client
        });
        let got = inspect(&server, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(
            matches!(got, Inspected::Tls(ref h) if h.server_name.as_deref() == Some("b.example"))
        );
        let mut buf = vec![0u8; hello.len()];
        let n = server.peek(&mut buf).await.unwrap();
        assert_eq!(n, hello.len());
        drop(writer.await.unwrap());
    }
}
