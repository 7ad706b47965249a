//! The console's session endpoints (sign in, who am I, sign out) and the checks every state
//! change passes (the CSRF proof of a cookie session, the operator role). Never stores a token
//! or a cookie; a failed sign-in is counted and logged without the token.

use super::auth::{self, Principal, Via};
use super::{Admin, Body, Caller, Endpoint, error, no_store, ok_json};
use crate::config::AdminRole;
use crate::metrics::flow_events::SignInAttempted;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::json;
use std::time::Duration;
use subtle::ConstantTimeEq as _;

/// Largest sign-in body (`{"token": "..."}`), and how long it may take to arrive.
const MAX_SIGN_IN_BODY: usize = 4096;
const SIGN_IN_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The header a state change authenticated by the session cookie must carry.
const CSRF_HEADER: &str = "x-csrf-token";

impl Admin {
    /// Why `principal` may not make this state change, if it may not: a session without its
    /// CSRF proof (anyone may sign out, but not through another site), or a viewer.
    pub(super) fn refuse_change(
        &self,
        principal: &Principal,
        req: &Request<Incoming>,
        endpoint: Endpoint<'_>,
    ) -> Option<Response<Body>> {
        if let Via::Session(claims) = &principal.via {
            let expected = self.sessions.csrf(&claims.id);
            let sent = req
                .headers()
                .get(CSRF_HEADER)
                .map_or(&[][..], HeaderValue::as_bytes);
            if !bool::from(sent.ct_eq(expected.as_bytes())) {
                return Some(error(
                    StatusCode::FORBIDDEN,
                    "a state change with the session cookie needs the session's CSRF value in \
                     X-CSRF-Token",
                ));
            }
        }
        let changes_work = !matches!(endpoint, Endpoint::SignIn | Endpoint::SignOut);
        (changes_work && principal.role < AdminRole::Operator).then(|| {
            error(
                StatusCode::FORBIDDEN,
                &format!(
                    "`{}` is a viewer: replays and redrives need an operator token",
                    principal.name
                ),
            )
        })
    }

    pub(super) async fn sign_in(
        &self,
        req: Request<Incoming>,
        caller: Caller,
        now: i64,
    ) -> Response<Body> {
        let body = match read_small_body(req.into_body()).await {
            Ok(b) => b,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
        let token = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_owned));
        let Some(token) = token else {
            return error(
                StatusCode::BAD_REQUEST,
                "the body must be JSON: {\"token\": \"...\"}",
            );
        };
        let found = self.tokens.find(token.as_bytes());
        SignInAttempted {
            metrics: &self.metrics,
            name: found.map(|(name, _)| name),
            client: caller.client,
        }
        .emit();
        let Some((name, role)) = found else {
            self.state
                .record_rejection("admin", caller.client, "console sign-in: no such token");
            return error(StatusCode::UNAUTHORIZED, "no such admin token");
        };
        let (claims, cookie) = self.sessions.start(name, role, now);
        let principal = Principal {
            name: name.to_owned(),
            role,
            via: Via::Session(claims),
        };
        let mut res = self.session_answer(&principal);
        let max_age = self.sessions.ttl().as_secs();
        let secure = if caller.tls { "; Secure" } else { "" };
        let set = format!(
            "{}={cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}",
            auth::SESSION_COOKIE
        );
        if let Ok(v) = HeaderValue::from_str(&set) {
            res.headers_mut().insert(header::SET_COOKIE, v);
        }
        res
    }

    /// `{"name","role","csrf","expires_at"}` (`csrf` and `expires_at` are null for a bearer
    /// token, which needs no CSRF proof and does not expire).
    pub(super) fn session_answer(&self, p: &Principal) -> Response<Body> {
        let (csrf, expires_at) = match &p.via {
            Via::Session(c) => (Some(self.sessions.csrf(&c.id)), Some(c.expires_ms)),
            Via::Bearer => (None, None),
        };
        let mut res = ok_json(&json!({
            "name": p.name,
            "role": p.role.as_str(),
            "csrf": csrf,
            "expires_at": expires_at,
        }));
        no_store(&mut res);
        res
    }

    pub(super) fn sign_out(
        &self,
        who: Option<&Principal>,
        caller: Caller,
        now: i64,
    ) -> Response<Body> {
        if let Some(Principal {
            via: Via::Session(claims),
            ..
        }) = who
        {
            self.state.revoked.revoke(claims, now);
        }
        let mut res = ok_json(&json!({ "ok": true }));
        let secure = if caller.tls { "; Secure" } else { "" };
        let clear = format!(
            "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}",
            auth::SESSION_COOKIE
        );
        if let Ok(v) = HeaderValue::from_str(&clear) {
            res.headers_mut().insert(header::SET_COOKIE, v);
        }
        res
    }
}

/// The sign-in body, at most [`MAX_SIGN_IN_BODY`] bytes within [`SIGN_IN_BODY_TIMEOUT`].
async fn read_small_body(mut body: Incoming) -> Result<Vec<u8>, &'static str> {
    let read = async {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| "the body could not be read")?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > MAX_SIGN_IN_BODY {
                    return Err("the body is too large for a sign-in");
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    };
    tokio::time::timeout(SIGN_IN_BODY_TIMEOUT, read)
        .await
        .unwrap_or(Err("the body took too long"))
}
