//! Just enough HTTP/1.1 response parsing for a load generator: the status,
//! where the body ends (`content-length` or chunked), and whether the server
//! will close the connection. Headers are otherwise ignored.

/// Why a response could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError(pub &'static str);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed HTTP/1.1 response: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
    /// No length: the body runs until the server closes the connection.
    UntilClose,
}

/// A parsed status line and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Bytes of the status line and headers, blank line included.
    pub len: usize,
    pub framing: Framing,
    /// The server said `connection: close`.
    pub close: bool,
}

/// The first response head in `buf`, or `None` if more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, ParseError> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err(ParseError("response head larger than 64 KiB"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| ParseError("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or_default().starts_with("HTTP/1.") {
        return Err(ParseError("not an HTTP/1.x status line"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(ParseError("bad status code"))?;
    let mut framing = Framing::UntilClose;
    let mut close = status_line.starts_with("HTTP/1.0");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(ParseError("header line without a colon"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            if framing != Framing::Chunked {
                let n = value
                    .parse()
                    .map_err(|_| ParseError("bad content-length"))?;
                framing = Framing::Length(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().ends_with("chunked") {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                close = true;
            } else if value.contains("keep-alive") {
                close = false;
            }
        }
    }
    // Responses that never have a body.
    if status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    Ok(Some(Head {
        status,
        len: end + 4,
        framing,
        close,
    }))
}

/// A complete chunked body at the start of `buf`: `(encoded, decoded)`
/// lengths, the encoded one with trailers and the final blank line; `None`
/// if more bytes are needed.
pub fn chunked_len(buf: &[u8]) -> Result<Option<(usize, usize)>, ParseError> {
    let mut at = 0;
    let mut decoded = 0;
    loop {
        let Some(line_end) = find(&buf[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[at..at + line_end])
            .map_err(|_| ParseError("chunk size is not UTF-8"))?;
        // Chunk extensions follow a `;`.
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| ParseError("bad chunk size"))?;
        at += line_end + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(end) = find(&buf[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += end + 2;
                if end == 0 {
                    return Ok(Some((at, decoded)));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(ParseError("chunk not followed by CRLF"));
        }
        at += size + 2;
        decoded += size;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_response() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello";
        let head = parse_head(buf).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Length(5));
        assert_eq!(&buf[head.len..], b"hello");
        assert!(!head.close);
    }

    #[test]
    fn incomplete_head_needs_more() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Len").unwrap(), None);
        assert_eq!(parse_head(b"").unwrap(), None);
    }

    #[test]
    fn connection_close_and_http10() {
        let head = parse_head(
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.status, 503);
        assert!(head.close);
        let head = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(head.close);
        assert_eq!(head.framing, Framing::UntilClose);
    }

    #[test]
    fn chunked_wins_over_length_and_bodyless_statuses() {
        let head = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        let head = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::Length(0));
    }

    #[test]
    fn malformed_heads_are_errors() {
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies() {
        let body = b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\nNEXT";
        assert_eq!(chunked_len(body).unwrap(), Some((body.len() - 4, 9)));
        let with_trailer = b"3\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(
            chunked_len(with_trailer).unwrap(),
            Some((with_trailer.len(), 3))
        );
        for cut in 0..body.len() - 4 {
            assert_eq!(chunked_len(&body[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(chunked_len(b"zz\r\n").is_err());
        assert!(chunked_len(b"3\r\nabcXY").is_err());
    }
}
