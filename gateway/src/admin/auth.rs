//! Who is asking: a request is authenticated by `Authorization: Bearer <token>` (scripts) or
//! by the console's session cookie (browsers), and becomes a [`Principal`] with the token's
//! name and role. Tokens are kept only as SHA-256 digests and compared in constant time, every
//! one of them on every request (no early exit that would tell which prefix matched).
//!
//! It decides nothing about endpoints: `mod.rs` checks the role and the CSRF proof.

use super::session::{SessionClaims, SessionKeys};
use crate::config::{AdminRole, AdminSettings};
use http::{HeaderMap, header};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The cookie holding a console session.
pub(super) const SESSION_COOKIE: &str = "gateway_console";

/// One configured token, as kept in memory.
#[derive(Debug)]
struct TokenEntry {
    name: String,
    role: AdminRole,
    digest: [u8; 32],
}

/// Every configured admin token of one config generation.
#[derive(Debug)]
pub(super) struct TokenBook {
    tokens: Vec<TokenEntry>,
}

/// Who a request is from, and how it proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Principal {
    pub(super) name: String,
    pub(super) role: AdminRole,
    pub(super) via: Via,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Via {
    /// A bearer token: never sent by a browser on its own, so it needs no CSRF proof.
    Bearer,
    /// The session cookie, which a browser attaches by itself: state changes need the
    /// session's CSRF value in `X-CSRF-Token`.
    Session(SessionClaims),
}

impl TokenBook {
    pub(super) fn new(settings: &AdminSettings) -> Self {
        let tokens = settings
            .tokens
            .iter()
            .map(|t| TokenEntry {
                name: t.name.clone(),
                role: t.role,
                digest: Sha256::digest(t.token.expose()).into(),
            })
            .collect();
        Self { tokens }
    }

    /// The name and role of `presented`, if it is a configured token.
    pub(super) fn find(&self, presented: &[u8]) -> Option<(&str, AdminRole)> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for t in &self.tokens {
            if bool::from(digest.ct_eq(&t.digest)) {
                found = Some((t.name.as_str(), t.role));
            }
        }
        found
    }

    /// The role `name` has now, if it is still configured.
    pub(super) fn role_of(&self, name: &str) -> Option<AdminRole> {
        self.tokens.iter().find(|t| t.name == name).map(|t| t.role)
    }

    /// Input to the session key: names, roles and token digests, in config order. Changing,
    /// adding or removing a token (or a role) changes the key, which ends every session.
    pub(super) fn key_material(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for t in &self.tokens {
            out.extend_from_slice(&(t.name.len() as u64).to_be_bytes());
            out.extend_from_slice(t.name.as_bytes());
            out.extend_from_slice(t.role.as_str().as_bytes());
            out.extend_from_slice(&t.digest);
        }
        out
    }
}

/// What the request presented to authenticate, before it is checked.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Presented<'r> {
    Bearer(&'r str),
    Cookie(&'r str),
    Nothing,
}

/// The bearer token if there is an `Authorization` header (the scheme name in any case,
/// RFC 9110 11.1), else the session cookie.
pub(super) fn presented(headers: &HeaderMap) -> Presented<'_> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("Bearer").then_some(token))
            .map(str::trim);
        // A malformed header is a wrong token, never a fallback to the cookie.
        return Presented::Bearer(token.unwrap_or(""));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map_or(Presented::Nothing, |(_, value)| Presented::Cookie(value))
}

/// The principal of a request, checked against `book` and `keys` at `now_ms`.
pub(super) fn authenticate(
    headers: &HeaderMap,
    book: &TokenBook,
    keys: &SessionKeys,
    now_ms: i64,
) -> Option<Principal> {
    match presented(headers) {
        Presented::Bearer(token) => book.find(token.as_bytes()).map(|(name, role)| Principal {
            name: name.to_owned(),
            role,
            via: Via::Bearer,
        }),
        Presented::Cookie(cookie) => {
            let claims = keys.verify(cookie, now_ms)?;
            // The key already changes with every token and role; this keeps a session from
            // outliving its token even if two configs derived the same key.
            (book.role_of(&claims.name) == Some(claims.role)).then(|| Principal {
                name: claims.name.clone(),
                role: claims.role,
                via: Via::Session(claims),
            })
        }
        Presented::Nothing => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_bearer_header_wins_over_the_cookie_and_a_bad_one_is_no_fallback() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; gateway_console=xyz"),
        );
        assert_eq!(presented(&h), Presented::Cookie("xyz"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  tok "),
        );
        assert_eq!(presented(&h), Presented::Bearer("tok"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented(&h), Presented::Bearer(""));
    }
}
