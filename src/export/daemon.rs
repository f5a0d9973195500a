//! `POST /images/load` over the daemon socket, with the docker-archive
//! streamed as a chunked body (never held in memory).
//!
//! Plain HTTP/1.1 over a Unix socket (`unix:///var/run/docker.sock`) or TCP
//! (`tcp://host:port`); the exchange is one request and one response, so it
//! is written here directly instead of adding an HTTP stack with Unix
//! socket support.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

/// Loading into a daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The socket could not be reached.
    #[error("cannot reach the image daemon at {host}: {source} (set DOCKER_HOST, e.g. unix:///run/podman/podman.sock)")]
    Connect {
        /// The daemon address.
        host: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Sending or receiving failed.
    #[error("image daemon at {host}: {message}")]
    Exchange {
        /// The daemon address.
        host: String,
        /// What went wrong.
        message: String,
    },
    /// The daemon refused the image.
    #[error("image daemon at {host} refused the image: {message}")]
    Refused {
        /// The daemon address.
        host: String,
        /// The daemon's error text.
        message: String,
    },
}

/// `DOCKER_HOST`, or the default Docker socket.
pub fn default_docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Chunked transfer encoding around a writer.
struct Chunked<W: Write> {
    inner: W,
}

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.inner, "{:x}\r\n", buf.len())?;
        self.inner.write_all(buf)?;
        self.inner.write_all(b"\r\n")?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streams the archive written by `write_archive` into the daemon at `host`
/// and returns the daemon's progress lines (e.g. `Loaded image: …`).
pub fn load_into_daemon(
    host: &str,
    write_archive: impl FnOnce(&mut dyn Write) -> Result<(), String>,
) -> Result<Vec<String>, LoadError> {
    let exchange = |message: String| LoadError::Exchange {
        host: host.to_string(),
        message,
    };
    let stream = connect(host)?;
    let mut writer = io::BufWriter::with_capacity(1 << 20, stream);
    writer
        .write_all(b"POST /images/load?quiet=0 HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .map_err(|e| exchange(e.to_string()))?;
    {
        let mut chunked = Chunked { inner: &mut writer };
        write_archive(&mut chunked).map_err(exchange)?;
    }
    writer
        .write_all(b"0\r\n\r\n")
        .map_err(|e| exchange(e.to_string()))?;
    writer.flush().map_err(|e| exchange(e.to_string()))?;
    let stream = writer
        .into_inner()
        .map_err(|e| exchange(e.error().to_string()))?;
    let (status, body) = read_response(BufReader::new(stream)).map_err(exchange)?;
    progress_lines(host, status, &body)
}

/// The daemon's socket: `unix://PATH` or `tcp://HOST:PORT`.
fn connect(host: &str) -> Result<Box<dyn Stream>, LoadError> {
    let connect_error = |source| LoadError::Connect {
        host: host.to_string(),
        source,
    };
    if let Some(path) = host.strip_prefix("unix://") {
        Ok(Box::new(UnixStream::connect(path).map_err(connect_error)?))
    } else if let Some(addr) = host.strip_prefix("tcp://") {
        Ok(Box::new(TcpStream::connect(addr).map_err(connect_error)?))
    } else {
        Err(LoadError::Exchange {
            host: host.to_string(),
            message: "DOCKER_HOST must start with unix:// or tcp://".to_string(),
        })
    }
}

/// The response's status code and body (chunked or to the end).
fn read_response(mut reader: impl BufRead) -> Result<(u16, Vec<u8>), String> {
    let text = |e: io::Error| e.to_string();
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(text)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut chunked_body = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(text)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
            {
                chunked_body = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked_body {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).map_err(text)?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).map_err(text)?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body).map_err(text)?;
    }
    Ok((status, body))
}

/// The daemon's JSON progress stream as lines, or the error it reports
/// (in the stream, or as a status other than 2xx).
fn progress_lines(host: &str, status: u16, body: &[u8]) -> Result<Vec<String>, LoadError> {
    let text = String::from_utf8_lossy(body);
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => {
                if let Some(e) = v
                    .get("errorDetail")
                    .and_then(|d| d.get("message"))
                    .or_else(|| v.get("error"))
                {
                    return Err(LoadError::Refused {
                        host: host.to_string(),
                        message: e.as_str().unwrap_or_default().to_string(),
                    });
                }
                if let Some(s) = v.get("stream").and_then(|s| s.as_str()) {
                    lines.push(s.trim().to_string());
                }
            }
            Err(_) => lines.push(line.trim().to_string()),
        }
    }
    if !(200..300).contains(&status) {
        return Err(LoadError::Refused {
            host: host.to_string(),
            message: format!("HTTP {status}: {}", lines.join(" ")),
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_response_is_read_to_its_last_chunk() {
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            19\r\n{\"stream\":\"Loaded image\"}\r\n\
            3;ext=1\r\n\n{}\r\n0\r\n\r\ntrailing bytes never read";
        let (status, body) = read_response(&response[..]).unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, b"{\"stream\":\"Loaded image\"}\n{}");
        assert_eq!(
            progress_lines("h", status, &body).unwrap(),
            ["Loaded image"]
        );
    }

    #[test]
    fn a_refusal_in_the_stream_or_the_status_is_an_error() {
        let body = b"{\"stream\":\"x\"}\n{\"errorDetail\":{\"message\":\"bad archive\"}}\n";
        match progress_lines("h", 200, body) {
            Err(LoadError::Refused { message, .. }) => assert_eq!(message, "bad archive"),
            other => panic!("{other:?}"),
        }
        match progress_lines("h", 500, b"oops\n") {
            Err(LoadError::Refused { message, .. }) => assert_eq!(message, "HTTP 500: oops"),
            other => panic!("{other:?}"),
        }
        let (status, body) = read_response(&b"HTTP/1.0 404 Not Found\r\n\r\nno such"[..]).unwrap();
        assert_eq!((status, &body[..]), (404, &b"no such"[..]));
    }
}
