//! `envoy.filters.listener.http_inspector`: recognises plaintext HTTP from the first bytes.
//!
//! The HTTP/2 prior-knowledge preface gives `h2c`; an HTTP/1.x request line gives
//! `http/1.1` when it ends in `HTTP/1.1` and `http/1.0` otherwise (HTTP/1.0, HTTP/0.9, even
//! `HTTP/2.0`). Anything else is not HTTP and the connection carries on without an
//! application protocol. The rules follow what Envoy 1.40 does (its Balsa-based parser),
//! checked against the real binary:
//!
//! - the method is any token (custom methods too) and must be followed by a space, tab,
//!   vertical tab, form feed or CR; a non-token byte in the method is rejected at once,
//!   without waiting for the end of the line;
//! - the rest of the line is split at bytes <= 0x20; the target must look like a path, `*`,
//!   an absolute URI or (for CONNECT) an authority; the version, if any, must be
//!   `HTTP/<digit>.<digit>`;
//! - a line is only judged once its `\n` has arrived; with none within 64 KiB Envoy closes
//!   the connection.

use super::app_protocols::AppProtocols;

/// How much the inspector asks to peek at first (Envoy doubles it as needed).
pub const INITIAL_READ_SIZE: usize = 8 * 1024;
/// The most it reads before giving up and closing the connection.
pub const MAX_INSPECT_SIZE: usize = 64 * 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The inspector's verdict on the bytes seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpInspection {
    /// Undecided; peek again when more bytes arrive.
    NeedMoreData,
    /// Plaintext HTTP.
    Http(HttpProtocol),
    /// Not HTTP: match filter chains without an application protocol.
    NotHttp,
    /// 64 KiB without the end of a request line: Envoy closes the connection.
    TooLarge,
}

/// The HTTP version the inspector reports, as the application protocol filter chains match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpProtocol {
    /// `http/1.0` (also HTTP/0.9 and any version other than 1.1).
    Http10,
    /// `http/1.1`.
    Http11,
    /// `h2c`: the HTTP/2 connection preface.
    H2c,
}

/// Classifies the first bytes of a connection. `buf` holds everything peeked so far (bytes
/// past [`MAX_INSPECT_SIZE`] are ignored); the function is pure and can be called again
/// with a longer buffer.
pub fn inspect(buf: &[u8]) -> HttpInspection {
    let data = buf.get(..MAX_INSPECT_SIZE).unwrap_or(buf);
    match classify(data) {
        HttpInspection::NeedMoreData if data.len() >= MAX_INSPECT_SIZE => HttpInspection::TooLarge,
        verdict => verdict,
    }
}

// === impl HttpProtocol ===

impl HttpProtocol {
    /// The protocol name filter chains match (`application_protocols`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "http/1.0",
            Self::Http11 => "http/1.1",
            Self::H2c => "h2c",
        }
    }

    /// The protocol as the connection's application protocols.
    pub fn app_protocols(self) -> AppProtocols<'static> {
        AppProtocols::Names(match self {
            Self::Http10 => &["http/1.0"],
            Self::Http11 => &["http/1.1"],
            Self::H2c => &["h2c"],
        })
    }
}

fn classify(data: &[u8]) -> HttpInspection {
    let Some(&first) = data.first() else {
        return HttpInspection::NeedMoreData;
    };
    let prefix = data.len().min(H2_PREFACE.len());
    if data.get(..prefix) == H2_PREFACE.get(..prefix) {
        return if data.len() < H2_PREFACE.len() {
            HttpInspection::NeedMoreData
        } else {
            HttpInspection::Http(HttpProtocol::H2c)
        };
    }
    if first == b'\r' || first == b'\n' {
        return HttpInspection::NotHttp;
    }
    let Some(method_end) = data.iter().position(|&b| !is_token(b)) else {
        return HttpInspection::NeedMoreData;
    };
    let ends_method = data
        .get(method_end)
        .is_some_and(|&b| matches!(b, b' ' | b'\t' | 0x0b | 0x0c | b'\r'));
    if method_end == 0 || !ends_method {
        return HttpInspection::NotHttp;
    }
    let Some(newline) = data.iter().position(|&b| b == b'\n') else {
        return HttpInspection::NeedMoreData;
    };
    let line = data.get(..newline).unwrap_or_default();
    request_line(line, method_end).map_or(HttpInspection::NotHttp, HttpInspection::Http)
}

/// Judges a complete request line (without its `\n`) whose method is `line[..method_end]`.
fn request_line(line: &[u8], method_end: usize) -> Option<HttpProtocol> {
    let (method, rest) = line.split_at_checked(method_end)?;
    let rest = trim_start(rest);
    let target_end = rest.iter().position(|&b| is_space(b)).unwrap_or(rest.len());
    let (target, rest) = rest.split_at_checked(target_end)?;
    let version = trim_end(trim_start(rest));
    if !is_valid_target(target, method == b"CONNECT") || !is_valid_version(version) {
        return None;
    }
    // Envoy asks whether the (trimmed) first line ends in HTTP/1.1, so "GET /HTTP/1.1" (an
    // HTTP/0.9 line) counts as HTTP/1.1 too.
    if trim_end(line).ends_with(b"HTTP/1.1") {
        Some(HttpProtocol::Http11)
    } else {
        Some(HttpProtocol::Http10)
    }
}

/// RFC 9110 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Balsa splits the request line at any byte up to and including space.
fn is_space(b: u8) -> bool {
    b <= b' '
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_space(b)).unwrap_or(s.len());
    s.get(start..).unwrap_or_default()
}

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| !is_space(b)).map_or(0, |i| i + 1);
    s.get(..end).unwrap_or_default()
}

/// Envoy's check of the request target, modelled on http-parser's: a path or `*`, else
/// `scheme://host[path]`, or for CONNECT an authority.
fn is_valid_target(target: &[u8], is_connect: bool) -> bool {
    let is_path_char = |b: &u8| *b == 9 || *b == 12 || (b'!'..=126).contains(b);
    let Some(&first) = target.first() else {
        return false;
    };
    if first == b'/' || first == b'*' {
        return target.iter().skip(1).all(is_path_char);
    }
    let mut rest = target;
    if !is_connect {
        if !first.is_ascii_alphabetic() {
            return false;
        }
        let scheme_end = rest
            .iter()
            .skip(1)
            .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
            .map_or(rest.len(), |i| i + 1);
        match rest.get(scheme_end..).and_then(|r| r.strip_prefix(b"://")) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    let host_end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (host, path) = rest.split_at(host_end);
    let is_host_char = |b: &u8| b.is_ascii_alphanumeric() || b"!$%&'()*+,-.:;=@[]_~".contains(b);
    host.iter().all(is_host_char)
        && !host.windows(2).any(|w| w == b"@@")
        && path.iter().all(is_path_char)
}

/// Empty (HTTP/0.9) or `HTTP/<digit>.<digit>`.
fn is_valid_version(version: &[u8]) -> bool {
    match version {
        [] => true,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] => {
            major.is_ascii_digit() && minor.is_ascii_digit()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::HttpInspection::{Http, NeedMoreData, NotHttp, TooLarge};
    use super::HttpProtocol::{H2c, Http10, Http11};
    use super::*;

    /// Verdicts Envoy 1.40 gave for these exact bytes (probed with a listener whose chains
    /// answer their names; see the differential test for the live comparison).
    const ENVOY_VERDICTS: &[(&[u8], HttpInspection)] = &[
        (b"GET / HTTP/1.1\r\n", Http(Http11)),
        (b"GET / HTTP/1.0\r\n", Http(Http10)),
        (b"GET / HTTP/1.1\n", Http(Http11)),
        (b"FOO / HTTP/1.1\r\n", Http(Http11)),
        (b"get / HTTP/1.1\r\n", Http(Http11)),
        (b"GET / HTTP/2.0\r\n", Http(Http10)),
        (b"GET / HTTP/0.9\r\n", Http(Http10)),
        (b"GET /\r\n", Http(Http10)),
        (b"GET / \r\n", Http(Http10)),
        (b"GET /HTTP/1.1\r\n", Http(Http11)),
        (b"GET\r\n", NotHttp),
        (b"GET / HTTP/1.1 x\r\n", NotHttp),
        (b"GET  /  HTTP/1.1\r\n", Http(Http11)),
        (b"GET\t/\tHTTP/1.1\r\n", Http(Http11)),
        (b"GET\x0b/ HTTP/1.1\r\n", Http(Http11)),
        (b"GET\r/ HTTP/1.1\r\n", Http(Http11)),
        (b"GET\x01/ HTTP/1.1\r\n", NotHttp),
        (b"GET \x01/\x01HTTP/1.1\x01\r\n", Http(Http11)),
        (b"GET /\x01 HTTP/1.1\r\n", Http(Http11)),
        (b"GET /a\x01b HTTP/1.1\r\n", NotHttp),
        (b"GET / HTTP/1.1\rX\n", NotHttp),
        (b"GET / HTTP/1.1\r\r\n", Http(Http11)),
        (b"GET / http/1.1\r\n", NotHttp),
        (b"GET / HTTP/1.10\r\n", NotHttp),
        (b"GET / HTTP/a.1\r\n", NotHttp),
        (b"GET foo HTTP/1.1\r\n", NotHttp),
        (b"GET * HTTP/1.1\r\n", Http(Http11)),
        (b"GET http://a/ HTTP/1.1\r\n", Http(Http11)),
        (b"GET a1+.-://x HTTP/1.1\r\n", Http(Http11)),
        (b"GET 1a://x HTTP/1.1\r\n", NotHttp),
        (b"GET http:/x HTTP/1.1\r\n", NotHttp),
        (b"GET http://a@@b/ HTTP/1.1\r\n", NotHttp),
        (b"GET http://a^b/ HTTP/1.1\r\n", NotHttp),
        (b"GET /a\x7f HTTP/1.1\r\n", NotHttp),
        (b"GET /\x80 HTTP/1.1\r\n", NotHttp),
        (b"CONNECT a:80 HTTP/1.1\r\n", Http(Http11)),
        (b"CONNECT a^b:80 HTTP/1.1\r\n", NotHttp),
        (b"CONNECT /x HTTP/1.1\r\n", Http(Http11)),
        (b"G@T / HTTP/1.1\r\n", NotHttp),
        (b" GET / HTTP/1.1\r\n", NotHttp),
        (b"\r\nGET / HTTP/1.1\r\n", NotHttp),
        (b"\x01GET / HTTP/1.1\r\n", NotHttp),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Http(H2c)),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nextra", Http(H2c)),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r", NeedMoreData),
        (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", Http(Http10)),
        (b"hello world\n", NotHttp),
        (b"hello world", NeedMoreData),
        (b"GET / HTTP/1.1", NeedMoreData),
        (b"GET \x01", NeedMoreData),
        (b"GET\x01", NotHttp),
        (b"GET\n", NotHttp),
        (b"a\x01", NotHttp),
        (b"\n", NotHttp),
        (b"\r", NotHttp),
        (b"x", NeedMoreData),
        (b"\x16\x03\x01\x02\x00\x01", NotHttp),
        (b"\x00\x01\x02\x03", NotHttp),
    ];

    #[test]
    fn matches_envoys_verdicts() {
        for &(input, expected) in ENVOY_VERDICTS {
            assert_eq!(
                inspect(input),
                expected,
                "input {:?}",
                input.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn reports_the_protocol_names_chains_match() {
        assert_eq!(Http10.as_str(), "http/1.0");
        assert_eq!(Http11.as_str(), "http/1.1");
        assert_eq!(H2c.as_str(), "h2c");
        let names: Vec<&[u8]> = H2c.app_protocols().iter().collect();
        assert_eq!(names, vec![&b"h2c"[..]]);
    }

    #[test]
    fn truncated_requests_and_prefaces_need_more_data() {
        let inputs: [(&[u8], HttpInspection); 4] = [
            (b"GET /index.html HTTP/1.1\r\n", Http(Http11)),
            (b"POST /api HTTP/1.0\r\n", Http(Http10)),
            (b"CONNECT example.com:443 HTTP/1.1\r\n", Http(Http11)),
            (H2_PREFACE, Http(H2c)),
        ];
        for (full, verdict) in inputs {
            for cut in 0..full.len() {
                let prefix = &full[..cut];
                assert_eq!(
                    inspect(prefix),
                    NeedMoreData,
                    "prefix {:?}",
                    prefix.escape_ascii().to_string()
                );
            }
            assert_eq!(inspect(full), verdict);
        }
    }

    #[test]
    fn gives_up_after_64_kib_without_a_request_line() {
        let mut long = b"GET /".to_vec();
        long.resize(MAX_INSPECT_SIZE - 1, b'a');
        assert_eq!(inspect(&long), NeedMoreData);
        long.push(b'a');
        assert_eq!(inspect(&long), TooLarge);
        long.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(
            inspect(&long),
            TooLarge,
            "the newline is past what Envoy reads"
        );

        let mut fits = b"GET /".to_vec();
        fits.resize(MAX_INSPECT_SIZE - b" HTTP/1.1\r\n".len(), b'a');
        fits.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(fits.len(), MAX_INSPECT_SIZE);
        assert_eq!(inspect(&fits), Http(Http11));
    }

    #[test]
    fn never_panics_on_pseudo_random_bytes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut buf = Vec::new();
        for round in 0..20_000 {
            buf.clear();
            let len = (round % 97) + 1;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Bias towards the bytes the parser branches on.
                let pick = b"GET /HTTP1.\r\n \t*:@?PRI";
                let b = if seed.is_multiple_of(3) {
                    pick[(seed >> 8) as usize % pick.len()]
                } else {
                    (seed >> 16) as u8
                };
                buf.push(b);
            }
            let _ = inspect(&buf);
        }
    }
}
