//! The answers the webhook path and the service endpoints give, exactly as the design's table
//! says: `{"ok":true}`, `{"ok":true,"duplicate":true}` or `{"ok":false,"error":"..."}`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

pub(crate) type Body = Full<Bytes>;

const ACCEPTED: &[u8] = br#"{"ok":true}"#;
const DUPLICATE: &[u8] = br#"{"ok":true,"duplicate":true}"#;

fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

pub(crate) fn accepted() -> Response<Body> {
    with_body(
        StatusCode::OK,
        "application/json",
        Bytes::from_static(ACCEPTED),
    )
}

pub(crate) fn duplicate() -> Response<Body> {
    with_body(
        StatusCode::OK,
        "application/json",
        Bytes::from_static(DUPLICATE),
    )
}

/// `{"ok":false,"error":message}` with the given status.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    // Written by hand so `ok` comes first, as documented; the message is JSON-escaped.
    let message = serde_json::Value::from(message).to_string();
    let body = format!(r#"{{"ok":false,"error":{message}}}"#);
    with_body(status, "application/json", Bytes::from(body))
}

/// An error after which the connection must not be reused (the body was not read to its end).
pub(crate) fn error_and_close(status: StatusCode, message: &str) -> Response<Body> {
    let mut res = error(status, message);
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// An error answered with `Retry-After: <seconds>`, after which the connection is closed.
pub(crate) fn retry_later(status: StatusCode, message: &str, seconds: u32) -> Response<Body> {
    let mut res = error_and_close(status, message);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    res
}

pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed; use {allow}"),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

pub(crate) fn metrics_text(text: String) -> Response<Body> {
    with_body(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(text),
    )
}
