//! Reading a request body with a size cap, a deadline and a share of the memory budget of all
//! bodies, so neither a huge body, nor a client trickling bytes, nor many clients each holding
//! a body can hold memory or a connection beyond the configured limits; and refusing, from the
//! headers alone, a body sent in a content or transfer coding (gzip, deflate, ...), which the
//! gateway never inflates.

use super::capacity::BodyLease;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("body exceeds {0} bytes")]
    TooLarge(u64),
    #[error("request body not received in time")]
    Timeout,
    #[error("could not read request body: {0}")]
    Read(String),
    /// The bodies in memory are at `server.max_body_buffer` (the limit is in the field).
    #[error("server busy: request bodies in memory at the limit, retry later")]
    Overloaded(u64),
}

/// A request declared a content coding (or a transfer coding other than `chunked`). Holds the
/// header and the codings as declared (shortened), for the answer and the log.
#[derive(Debug, thiserror::Error)]
#[error("{header} {codings:?} is not supported; bodies must be sent uncompressed")]
pub(crate) struct UnsupportedEncoding {
    pub(crate) header: &'static str,
    pub(crate) codings: String,
}

/// The declared codings named in an answer are cut to this many characters: the header can be
/// nearly as large as the head cap (up to 128 KiB, see `listener::MAX_HEAD_BYTES`), and the
/// answer does not need to echo all of it.
const MAX_NAMED_ENCODING: usize = 64;

/// Refuses any `Content-Encoding` but `identity`, and any `Transfer-Encoding` coding but
/// `chunked` (which the HTTP layer removes), looking only at the headers.
///
/// Why refuse instead of inflating: the providers sign and send uncompressed bodies, a signature
/// covers the bytes as sent, and inflating would turn a 1 MiB body into gigabytes (a
/// decompression bomb) before the size limit could look at it. Refusing also keeps a compressed
/// body out of authentication and quarantine: it is answered before a byte of it is read.
/// Every field counts, each a comma-separated list (RFC 9110 §8.4, RFC 9112 §6.1); empty
/// members are ignored, `identity` in any case is "no coding".
pub(crate) fn check_encoding(headers: &HeaderMap) -> Result<(), UnsupportedEncoding> {
    let refused = [
        ("Content-Encoding", header::CONTENT_ENCODING, "identity"),
        ("Transfer-Encoding", header::TRANSFER_ENCODING, "chunked"),
    ];
    for (label, name, allowed) in refused {
        let codings = declared_codings(headers, &name, allowed);
        if !codings.is_empty() {
            let named = codings
                .join(", ")
                .chars()
                .take(MAX_NAMED_ENCODING)
                .collect();
            return Err(UnsupportedEncoding {
                header: label,
                codings: named,
            });
        }
    }
    Ok(())
}

/// The codings declared in every `name` field, but `identity` and `allowed`.
fn declared_codings(headers: &HeaderMap, name: &header::HeaderName, allowed: &str) -> Vec<String> {
    let mut codings = Vec::new();
    for value in headers.get_all(name) {
        // A value that is not visible ASCII is not a known coding either; show it lossily.
        let text = String::from_utf8_lossy(value.as_bytes());
        codings.extend(
            text.split(',')
                .map(str::trim)
                .filter(|c| {
                    !c.is_empty()
                        && !c.eq_ignore_ascii_case("identity")
                        && !c.eq_ignore_ascii_case(allowed)
                })
                .map(str::to_owned),
        );
    }
    codings
}

/// Reads the whole body, refusing it as soon as it passes `max` bytes (whatever the client
/// declared), when `deadline` passes, or when the bytes it has read would take `lease` past
/// the budget of all bodies in memory. Every byte held is in `lease` until the caller drops it.
pub(crate) async fn read_limited(
    mut body: Incoming,
    max: u64,
    deadline: Instant,
    lease: &mut BodyLease<'_>,
) -> Result<Bytes, BodyError> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0u64;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers (chunked) carry no body bytes.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        total = total.saturating_add(len);
        if total > max {
            return Err(BodyError::TooLarge(max));
        }
        lease
            .grow(len)
            .map_err(|e| BodyError::Overloaded(e.limit))?;
        if !data.is_empty() {
            chunks.push(data);
        }
    }
    // One chunk (a small body, or one that arrived at once) is the body as is; several are
    // joined once. The copy is held beside the chunks only until they are dropped here.
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut joined = BytesMut::with_capacity(usize::try_from(total).unwrap_or(0));
            for chunk in chunks {
                joined.extend_from_slice(&chunk);
            }
            joined.freeze()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::CONTENT_ENCODING,
                HeaderValue::from_bytes(v).expect("a valid header value"),
            );
        }
        h
    }

    fn refused(values: &[&[u8]]) -> Option<String> {
        check_encoding(&with(values)).err().map(|e| e.codings)
    }

    #[test]
    fn no_encoding_or_identity_is_accepted() {
        assert_eq!(refused(&[]), None);
        assert_eq!(refused(&[b"identity"]), None);
        assert_eq!(refused(&[b"IDENTITY"]), None);
        assert_eq!(refused(&[b" identity , identity"]), None);
        assert_eq!(refused(&[b""]), None);
        assert_eq!(refused(&[b"identity", b""]), None);
    }

    #[test]
    fn any_other_coding_is_refused_and_named() {
        assert_eq!(refused(&[b"gzip"]).as_deref(), Some("gzip"));
        assert_eq!(refused(&[b"x-gzip"]).as_deref(), Some("x-gzip"));
        assert_eq!(refused(&[b"deflate"]).as_deref(), Some("deflate"));
        assert_eq!(refused(&[b"br"]).as_deref(), Some("br"));
        assert_eq!(refused(&[b"Made-Up"]).as_deref(), Some("Made-Up"));
        // Lists, in one field or several; identity members are not named.
        assert_eq!(refused(&[b"identity, gzip"]).as_deref(), Some("gzip"));
        assert_eq!(
            refused(&[b"gzip", b"identity", b"br"]).as_deref(),
            Some("gzip, br")
        );
    }

    #[test]
    fn a_huge_or_binary_value_is_named_shortened() {
        let long = "a".repeat(10_000);
        let named = refused(&[long.as_bytes()]).expect("refused");
        assert_eq!(named.chars().count(), MAX_NAMED_ENCODING);
        let named = refused(&[b"gz\xffip"]).expect("refused");
        assert!(named.starts_with("gz"), "{named:?}");
        // The message quotes and escapes the name, so it cannot break the answer or a log line.
        let e = check_encoding(&with(&[b"gzip\"x"])).expect_err("refused");
        assert_eq!(
            e.to_string(),
            r#"Content-Encoding "gzip\"x" is not supported; bodies must be sent uncompressed"#
        );
    }

    #[test]
    fn a_transfer_coding_but_chunked_is_refused() {
        let te = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static(v));
            check_encoding(&h).err().map(|e| e.to_string())
        };
        assert_eq!(te("chunked"), None);
        assert_eq!(te("Chunked"), None);
        assert_eq!(
            te("gzip, chunked").as_deref(),
            Some(r#"Transfer-Encoding "gzip" is not supported; bodies must be sent uncompressed"#)
        );
        assert!(te("deflate,chunked").is_some());
    }
}
