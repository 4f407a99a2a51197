//! The HTTP/1.1 heads of the yakk/1 file exchange, without any I/O: the receiver's request as
//! the server reads it, the server's response as the fetcher reads it, the `Range`,
//! `Content-Disposition` and chunk-size fields. Parsing is httparse's; this module decides
//! what yakk accepts. Everything here reads a peer's bytes: `fuzz/` runs it (`v1_head`).

use crate::error::{Result, TransferError};
use crate::names::{self, escape};

use super::V1_PATH;

/// Headers read in one head, at most.
pub(crate) const MAX_HEADERS: usize = 64;

fn http(msg: impl Into<String>) -> TransferError {
    TransferError::Http(msg.into())
}

/// A request yakk serves: `GET` or `HEAD` of the exchange's path.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// `HEAD`: the response head only.
    pub head_only: bool,
    /// The `Range` header's value, if any (UTF-8 only).
    pub range: Option<String>,
}

/// A request yakk does not serve: the status to answer and what to report.
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest {
    pub status: &'static str,
    pub what: String,
}

/// Reads a request head (up to and including its empty line).
pub fn parse_request(head: &[u8]) -> std::result::Result<Request, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let ok = matches!(req.parse(head), Ok(httparse::Status::Complete(_)));
    let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
    let head_only = req.method == Some("HEAD");
    if !ok || !(head_only || req.method == Some("GET")) || path != V1_PATH {
        return Err(BadRequest {
            status: if ok {
                "404 Not Found"
            } else {
                "400 Bad Request"
            },
            what: format!(
                "unexpected request {} {}",
                escape(req.method.unwrap_or("?")),
                escape(req.path.unwrap_or("?"))
            ),
        });
    }
    let range = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("range"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::to_owned);
    Ok(Request { head_only, range })
}

/// What a response head says of the file that follows.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// The file's name: one safe path component, not one of yakk's partial-file names.
    pub name: String,
    pub body: Body,
}

/// Reads a response head: a `200` naming one safe file, with a body yakk can delimit.
pub fn parse_response(head: &[u8]) -> Result<Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(http("the sender's answer is not valid HTTP")),
    }
    if resp.code != Some(200) {
        return Err(http(format!(
            "the sender answered {} {}",
            resp.code.unwrap_or(0),
            escape(resp.reason.unwrap_or(""))
        )));
    }
    let mut name = None;
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let v = std::str::from_utf8(h.value).map_err(|_| http("header value is not UTF-8"))?;
        if h.name.eq_ignore_ascii_case("content-disposition") {
            name = parse_filename(v);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| http("bad Content-Length"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !v.trim().eq_ignore_ascii_case("chunked") {
                return Err(http(format!("unsupported Transfer-Encoding {}", escape(v))));
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("content-encoding")
            && !v.trim().eq_ignore_ascii_case("identity")
        {
            return Err(http(format!("unsupported Content-Encoding {}", escape(v))));
        }
    }
    let name =
        name.ok_or_else(|| http("the sender's answer names no file (Content-Disposition)"))?;
    names::check_component(&name).map_err(|reason| TransferError::UnsafeName {
        name: escape(&name),
        reason,
    })?;
    if names::is_partial_name(&name) {
        return Err(TransferError::UnsafeName {
            name: escape(&name),
            reason: "reserved for yakk's partial files",
        });
    }
    let body = match (chunked, length) {
        (true, _) => Body::Chunked,
        (false, Some(n)) => Body::Length(n),
        (false, None) => Body::Close,
    };
    Ok(Response { name, body })
}

/// The response head for a file: `status` (`200 OK` or `206 Partial Content`), the name,
/// `content_range` (a whole `Content-Range: …\r\n` line, or empty) and the body's length.
pub fn file_response(status: &str, name: &str, content_range: &str, len: u64) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Disposition: {}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\n{content_range}Content-Length: {len}\r\nConnection: close\r\n\r\n",
        disposition(name)
    )
}

/// The response head for standard input: its length is unknown, so the body is chunked.
pub fn stream_response(name: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Disposition: {}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        disposition(name)
    )
}

/// The size on a chunk's header line (hexadecimal, extensions after `;` ignored).
pub fn chunk_size(line: &str) -> Result<u64> {
    let hexlen = line.split(';').next().unwrap_or("").trim();
    if hexlen.is_empty() || hexlen.len() > 15 {
        return Err(http("bad chunk size"));
    }
    u64::from_str_radix(hexlen, 16).map_err(|_| http("bad chunk size"))
}

/// How the response body ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    Length(u64),
    Chunked,
    Close,
}

/// Format the `filename=` parameter.
pub fn disposition(name: &str) -> String {
    if name
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, ';' | '"' | '\\' | ','))
    {
        let q: String = name
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("attachment; filename=\"{q}\"")
    } else {
        format!("attachment; filename={name}")
    }
}

/// Find the `filename` parameter in a Content-Disposition value (bare or quoted).
pub fn parse_filename(v: &str) -> Option<String> {
    let mut rest = v;
    while let Some(i) = rest.to_ascii_lowercase().find("filename") {
        let after = rest[i + 8..].trim_start();
        let before_ok = i == 0 || matches!(rest.as_bytes()[i - 1], b' ' | b';' | b'\t');
        if before_ok && let Some(val) = after.strip_prefix('=') {
            let val = val.trim_start();
            if let Some(q) = val.strip_prefix('"') {
                let mut out = String::new();
                let mut it = q.chars();
                while let Some(c) = it.next() {
                    match c {
                        '\\' => out.push(it.next()?),
                        '"' => return Some(out),
                        c => out.push(c),
                    }
                }
                return None;
            }
            return Some(val.split(';').next().unwrap_or("").trim().to_owned());
        }
        rest = &rest[i + 8..];
    }
    None
}

/// A `Range: bytes=…` header, as far as it is honoured: one range (`N-`, `N-M` or `-N`), or
/// `None` for anything else, which is ignored and answered with the whole file.
pub fn parse_range(value: &str, size: u64) -> Option<std::result::Result<(u64, u64), ()>> {
    let (unit, spec) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let number = |t: &str| -> Option<Option<u64>> {
        let t = t.trim();
        if t.is_empty() {
            Some(None)
        } else if t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse().ok().map(Some)
        } else {
            None
        }
    };
    let range = match (number(first)?, number(last)?) {
        (Some(a), None) => (a, size.saturating_sub(1)),
        (Some(a), Some(b)) if a <= b => (a, b.min(size.saturating_sub(1))),
        (None, Some(n)) if n > 0 => (size.saturating_sub(n), size.saturating_sub(1)),
        _ => return None,
    };
    if range.0 >= size {
        return Some(Err(()));
    }
    Some(Ok(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=4-", 10), Some(Ok((4, 9))));
        assert_eq!(parse_range("bytes=2-5", 10), Some(Ok((2, 5))));
        assert_eq!(parse_range("bytes=2-50", 10), Some(Ok((2, 9))));
        assert_eq!(parse_range("bytes=-3", 10), Some(Ok((7, 9))));
        assert_eq!(parse_range("bytes=-30", 10), Some(Ok((0, 9))));
        assert_eq!(parse_range(" Bytes = 1-1 ", 10), Some(Ok((1, 1))));
        assert_eq!(parse_range("bytes=10-", 10), Some(Err(())));
        assert_eq!(parse_range("bytes=0-", 0), Some(Err(())));
        // Ignored: several ranges, other units, nonsense.
        for v in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=5-2",
            "bytes=-0",
            "bytes=a-",
            "bytes=-",
            "bytes=+1-",
            "bytes=99999999999999999999-",
            "bytes",
        ] {
            assert_eq!(parse_range(v, 10), None, "{v}");
        }
    }

    #[test]
    fn filenames_round_trip() {
        for n in [
            "a.txt",
            "日本語.pdf",
            "with space.txt",
            "semi;colon",
            "q\"uote",
            "b\\s",
        ] {
            let d = disposition(n);
            assert_eq!(parse_filename(&d).as_deref(), Some(n), "{d}");
        }
        assert_eq!(disposition("a.txt"), "attachment; filename=a.txt");
        assert_eq!(
            parse_filename("attachment; filename=\"x y\"; size=3").as_deref(),
            Some("x y")
        );
        assert_eq!(parse_filename("attachment").as_deref(), None);
        assert_eq!(
            parse_filename("attachment; FILENAME = a.bin ").as_deref(),
            Some("a.bin")
        );
    }

    #[test]
    fn requests() {
        let get = b"GET /yakkfilesendreceive?x=1 HTTP/1.1\r\nHost: y\r\nRange: bytes=5-\r\n\r\n";
        assert_eq!(
            parse_request(get),
            Ok(Request {
                head_only: false,
                range: Some("bytes=5-".into())
            })
        );
        let head = b"HEAD /yakkfilesendreceive HTTP/1.1\r\n\r\n";
        assert_eq!(
            parse_request(head),
            Ok(Request {
                head_only: true,
                range: None
            })
        );
        assert_eq!(
            parse_request(b"GET /other HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .status,
            "404 Not Found"
        );
        assert_eq!(
            parse_request(b"POST /yakkfilesendreceive HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .status,
            "404 Not Found"
        );
        let bad = parse_request(b"GET /yakkfile\x1b[2J HTTP/1.1\r\n\r\n").unwrap_err();
        assert_eq!(bad.status, "400 Bad Request");
        assert!(!bad.what.contains('\x1b'), "{}", bad.what);
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=a.txt\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            parse_response(ok).unwrap(),
            Response {
                name: "a.txt".into(),
                body: Body::Length(5)
            }
        );
        let chunked = b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=\"a b\"\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap().body, Body::Chunked);
        let close = b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=x\r\n\r\n";
        assert_eq!(parse_response(close).unwrap().body, Body::Close);
        for bad in [
            &b"HTTP/1.1 404 Not Found\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=../x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=.yakk-0.part\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=x\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=x\r\nContent-Encoding: br\r\n\r\n",
            b"not http\r\n\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn what_is_served_is_what_is_fetched() {
        for name in ["a.txt", "with space.txt", "q\"uote"] {
            let r = parse_response(file_response("200 OK", name, "", 7).as_bytes()).unwrap();
            assert_eq!(
                r,
                Response {
                    name: name.into(),
                    body: Body::Length(7)
                }
            );
            let r = parse_response(stream_response(name).as_bytes()).unwrap();
            assert_eq!(r.body, Body::Chunked);
            assert_eq!(r.name, name);
        }
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size("1f").unwrap(), 31);
        assert_eq!(chunk_size(" A ; ext=1").unwrap(), 10);
        assert_eq!(chunk_size("0").unwrap(), 0);
        for bad in ["", ";", "g", "-1", "1234567890abcdef0"] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
    }
}
