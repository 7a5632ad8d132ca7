//! Where a connection was headed before capture redirected it.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// Finds a connection's original destination. Behind a trait so that tests
/// without root (and so without iptables) can say where a connection "was
/// going", which is what a REDIRECT rule would have recorded.
pub trait OriginalDst: Send + Sync + 'static {
    /// The original destination of `stream`, accepted with local address
    /// `local` from `peer`. A connection that was not redirected has none
    /// other than its local address, which is then the answer.
    fn original_dst(&self, stream: &TcpStream, local: SocketAddr, peer: SocketAddr) -> SocketAddr;
}

/// Reads `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for IPv6), which netfilter
/// answers for connections it translated (REDIRECT, DNAT) and, while it
/// tracks connections, with the local address for the others. When the
/// socket has no answer at all (no connection tracking), the local address is
/// the original destination.
#[derive(Debug, Default, Clone, Copy)]
pub struct SocketOriginalDst;

impl OriginalDst for SocketOriginalDst {
    fn original_dst(&self, stream: &TcpStream, local: SocketAddr, _peer: SocketAddr) -> SocketAddr {
        let sock = socket2::SockRef::from(stream);
        let v4 = match local {
            SocketAddr::V4(_) => true,
            SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
        };
        let found = if v4 {
            sock.original_dst_v4()
        } else {
            sock.original_dst_v6()
        };
        found.ok().and_then(|a| a.as_socket()).unwrap_or(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unredirected_connection_keeps_its_local_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (stream, peer) = listener.accept().await.unwrap();
        let local = stream.local_addr().unwrap();
        assert_eq!(SocketOriginalDst.original_dst(&stream, local, peer), addr);
        drop(client.await.unwrap());
    }
}
