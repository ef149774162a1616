//! A minimal blocking HTTP/1.1 client over `TcpStream`, enough for the
//! router's local API: one request per connection, bounded time and size.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response accepted.
const MAX_RESPONSE: usize = 4 << 20;

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, decoded as UTF-8 (lossily).
    pub body: String,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Nothing answers at the address (refused, timed out, unresolvable).
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke or timed out during the exchange.
    #[error("talking to {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not HTTP as we know it.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
}

/// A client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl Client {
    /// A client of `addr` (`host:port`, optionally prefixed `http://`).
    pub fn new(addr: &str, connect_timeout: Duration, io_timeout: Duration) -> Client {
        let addr = addr
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Client {
            addr,
            connect_timeout,
            io_timeout,
        }
    }

    /// The server's address as given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn connect(&self) -> Result<TcpStream, HttpError> {
        let unreachable = |source| HttpError::Unreachable {
            addr: self.addr.clone(),
            source,
        };
        let addrs: Vec<SocketAddr> = self.addr.to_socket_addrs().map_err(unreachable)?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(unreachable(last))
    }

    /// Sends `method path` with an optional `(content type, body)`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Response, HttpError> {
        let mut stream = self.connect()?;
        let io = |source| HttpError::Io {
            addr: self.addr.clone(),
            source,
        };
        stream.set_read_timeout(Some(self.io_timeout)).map_err(io)?;
        stream
            .set_write_timeout(Some(self.io_timeout))
            .map_err(io)?;
        let _ = stream.set_nodelay(true);
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: weave-cni\r\n",
            self.addr
        );
        let payload: &[u8] = match body {
            Some((content_type, data)) => {
                request.push_str(&format!("Content-Type: {content_type}\r\n"));
                data
            }
            None => &[],
        };
        request.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(payload);
        stream.write_all(&bytes).map_err(io)?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream.read(&mut chunk).map_err(io)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(chunk.get(..n).unwrap_or_default());
            if reply.len() > MAX_RESPONSE {
                return Err(HttpError::Malformed("response too large".into()));
            }
            // Stop as soon as a Content-Length response is complete, rather
            // than waiting for the server to close.
            if let Ok(Some(done)) = complete_length(&reply) {
                if reply.len() >= done {
                    break;
                }
            }
        }
        parse_response(&reply)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Total length of a response whose headers are in and which has a
/// Content-Length; `None` if that is not known yet.
fn complete_length(data: &[u8]) -> Result<Option<usize>, HttpError> {
    let Some(end) = find(data, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(data.get(..end).unwrap_or_default()).into_owned();
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                let len: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| HttpError::Malformed(format!("content-length {value:?}")))?;
                return Ok(end.checked_add(4).and_then(|h| h.checked_add(len)));
            }
        }
    }
    Ok(None)
}

/// Decodes a complete HTTP/1.x response (status line, headers, and a body
/// framed by Content-Length, chunked encoding or the end of the stream).
pub fn parse_response(data: &[u8]) -> Result<Response, HttpError> {
    let end =
        find(data, b"\r\n\r\n").ok_or_else(|| HttpError::Malformed("no end of headers".into()))?;
    let head = String::from_utf8_lossy(data.get(..end).unwrap_or_default()).into_owned();
    let rest = data.get(end + 4..).unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let proto = words.next().unwrap_or_default();
    if !proto.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("status line {status_line:?}")));
    }
    let status: u16 = words
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| HttpError::Malformed(format!("status line {status_line:?}")))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed(format!("header line {line:?}")));
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| HttpError::Malformed(format!("content-length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = length {
        rest.get(..len)
            .ok_or_else(|| HttpError::Malformed(format!("body shorter than {len} bytes")))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line_end =
            find(data, b"\r\n").ok_or_else(|| HttpError::Malformed("chunk size line".into()))?;
        let line = String::from_utf8_lossy(data.get(..line_end).unwrap_or_default()).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Malformed(format!("chunk size {size_text:?}")))?;
        data = data.get(line_end + 2..).unwrap_or_default();
        if size == 0 {
            return Ok(body);
        }
        let chunk = data
            .get(..size)
            .ok_or_else(|| HttpError::Malformed("chunk shorter than its size".into()))?;
        body.extend_from_slice(chunk);
        data = data.get(size..).unwrap_or_default();
        data = data.strip_prefix(b"\r\n").unwrap_or(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_length_chunked_and_eof_bodies() {
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n10.32.0.1/12").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "10.32.0.1/12"));
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "abcde"));
        let r = parse_response(b"HTTP/1.0 204 No Content\r\n\r\n").unwrap();
        assert!(r.is_success() && r.body.is_empty());
        for bad in [
            &b"garbage"[..],
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200\r\ncontent-length: 5\r\n\r\nab",
            b"HTTP/1.1 200\r\nbroken\r\n\r\n",
            b"HTTP/1.1 200\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"SMTP 200\r\n\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn talks_to_a_real_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while find(&got, b"hello").is_none() {
                let n = conn.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            // Keep the connection open: the client must stop at the length.
            std::thread::sleep(Duration::from_millis(300));
            String::from_utf8(got).unwrap()
        });
        let client = Client::new(
            &format!("http://{addr}"),
            Duration::from_secs(1),
            Duration::from_secs(5),
        );
        let r = client
            .request("PUT", "/container/x", Some(("application/json", b"hello")))
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (201, "ok"));
        let sent = server.join().unwrap();
        assert!(sent.starts_with("PUT /container/x HTTP/1.1\r\n"));
        assert!(sent.contains("Content-Length: 5\r\n"));
        // Nothing listening: unreachable.
        let closed = Client::new(
            &addr.to_string(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(matches!(
            closed.request("GET", "/", None),
            Err(HttpError::Unreachable { .. })
        ));
    }
}
