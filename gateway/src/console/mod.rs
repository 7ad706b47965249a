//! The operator console: static pages embedded in the binary (plain HTML, CSS and JavaScript
//! modules under `assets/`, no build step) and served under `/console/`. Every page is the same
//! shell at its own URL (`/console/events/42`), which the script renders from the admin API's
//! JSON, the only thing it talks to; it holds no data and no secret, so it needs no token.
//!
//! Every answer carries a Content-Security-Policy that allows only the console's own scripts
//! and styles (none inline, no framing, no other origin); the scripts write every value from
//! the API with `textContent`, never as markup. This module never reads the store.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;

type Body = Full<Bytes>;

/// Only the console's own files; nothing inline; never in a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

const SHELL: &str = include_str!("assets/index.html");

/// `(name under /console/assets/, content type, bytes)`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dom.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/pages.js"),
    ),
    (
        "actions.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/actions.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
];

/// The answer to a request for `path` (`/console` or under `/console/`).
pub fn serve(method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut res = respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    if let Some(name) = path.strip_prefix("/console/assets/") {
        return match ASSETS.iter().find(|(n, _, _)| *n == name) {
            Some((_, content_type, text)) => respond(StatusCode::OK, content_type, text),
            None => respond(StatusCode::NOT_FOUND, "text/plain", "no such asset\n"),
        };
    }
    // Every other path is a page of the console: the shell renders it.
    respond(StatusCode::OK, "text/html; charset=utf-8", SHELL)
}

fn respond(status: StatusCode, content_type: &str, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change only with the binary: revalidate, so an upgrade is seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_the_shell_and_nothing_is_inline() {
        let page = serve(&Method::GET, "/console/events/42");
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(
            page.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(page.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        // The CSP would block inline code anyway; the shell must not need any.
        assert!(!SHELL.contains("<script>") && !SHELL.contains("style="));
        assert!(!SHELL.contains("<style"));
        for (name, _, text) in ASSETS {
            assert!(!text.contains("innerHTML"), "{name} writes markup");
            assert!(!text.contains("insertAdjacentHTML"), "{name} writes markup");
            assert!(!text.contains("eval("), "{name} evaluates text");
        }
        assert_eq!(
            serve(&Method::GET, "/console/assets/nope.js").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            serve(&Method::POST, "/console/").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
