//! Console sessions as stateless signed cookies, so that any replica sharing the config
//! accepts a session another replica started: the cookie carries the token's name, its role,
//! the expiry and a random id, with an HMAC-SHA256 over them. The key is derived from the
//! configured admin tokens (names, roles and token digests), so every replica derives the same
//! key, no extra secret is needed, and changing any token ends every session.
//!
//! The CSRF value of a session is an HMAC of its id under the same key: the console reads it
//! from the sign-in answer (or `GET /admin/session`) and sends it in `X-CSRF-Token`; a page on
//! another site can neither read it nor make the browser add the header.
//!
//! Sign-out revokes the id in memory ([`Revocations`]), on the replica that served it (the
//! browser drops the cookie too). It never stores a token or a cookie.

use crate::config::AdminRole;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

/// Most revoked ids kept; past it the ones expiring soonest are forgotten first.
const MAX_REVOKED: usize = 100_000;

/// What a valid session cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionClaims {
    pub(crate) name: String,
    pub(crate) role: AdminRole,
    pub(crate) expires_ms: i64,
    /// 128 random bits, hex: what sign-out revokes and the CSRF value is derived from.
    pub(crate) id: String,
}

/// The signing key of one config generation, and how long sessions last.
#[derive(Debug)]
pub(crate) struct SessionKeys {
    key: [u8; 32],
    ttl: Duration,
}

impl SessionKeys {
    pub(crate) fn new(key_material: &[u8], ttl: Duration) -> Self {
        let mut h = Sha256::new();
        h.update(b"webhook-gateway console session key v1\0");
        h.update(key_material);
        Self {
            key: h.finalize().into(),
            ttl,
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length; a 32-byte one cannot fail.
        match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC-SHA256 accepts every key length"),
        }
    }

    /// A new session for `name`, starting at `now_ms`: the claims and the cookie value.
    pub(crate) fn start(
        &self,
        name: &str,
        role: AdminRole,
        now_ms: i64,
    ) -> (SessionClaims, String) {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let claims = SessionClaims {
            name: name.to_owned(),
            role,
            expires_ms: now_ms.saturating_add(ttl_ms),
            id,
        };
        let payload = format!(
            "{}|{}|{}|{}",
            claims.name,
            claims.role.as_str(),
            claims.expires_ms,
            claims.id
        );
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        let cookie = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        );
        (claims, cookie)
    }

    /// The claims of a cookie value signed with this key and not expired at `now_ms`.
    pub(crate) fn verify(&self, cookie: &str, now_ms: i64) -> Option<SessionClaims> {
        let (payload, tag) = cookie.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&tag).ok()?;
        let text = String::from_utf8(payload).ok()?;
        let mut parts = text.split('|');
        let (name, role, expires, id) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let claims = SessionClaims {
            name: name.to_owned(),
            role: AdminRole::parse(role)?,
            expires_ms: expires.parse().ok()?,
            id: id.to_owned(),
        };
        (parts.next().is_none() && claims.expires_ms > now_ms).then_some(claims)
    }

    /// The CSRF value of the session `id`.
    pub(crate) fn csrf(&self, id: &str) -> String {
        let mut mac = self.mac();
        mac.update(b"csrf|");
        mac.update(id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Session ids signed out on this replica, until they would have expired anyway.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    ids: Mutex<HashMap<String, i64>>,
}

impl Revocations {
    pub(crate) fn revoke(&self, claims: &SessionClaims, now_ms: i64) {
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ids.retain(|_, expires| *expires > now_ms);
        if ids.len() >= MAX_REVOKED
            && let Some(soonest) = ids
                .iter()
                .min_by_key(|(_, e)| **e)
                .map(|(id, _)| id.clone())
        {
            ids.remove(&soonest);
        }
        ids.insert(claims.id.clone(), claims.expires_ms);
    }

    pub(crate) fn is_revoked(&self, claims: &SessionClaims) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&claims.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_verifies_until_it_expires_and_not_under_another_key_or_edited() {
        let keys = SessionKeys::new(b"tokens-a", Duration::from_secs(60));
        let (claims, cookie) = keys.start("alice", AdminRole::Viewer, 1_000);
        assert_eq!(keys.verify(&cookie, 1_000), Some(claims.clone()));
        assert_eq!(keys.verify(&cookie, 61_000), None, "expired");
        let other = SessionKeys::new(b"tokens-b", Duration::from_secs(60));
        assert_eq!(other.verify(&cookie, 1_000), None, "another token set");
        // A viewer cannot make itself an operator by editing the payload.
        let (payload, tag) = cookie.split_once('.').expect("two parts");
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("utf8");
        let forged = URL_SAFE_NO_PAD.encode(text.replace("viewer", "operator"));
        assert_eq!(keys.verify(&format!("{forged}.{tag}"), 1_000), None);
        assert_ne!(keys.csrf(&claims.id), other.csrf(&claims.id));
        let revoked = Revocations::default();
        assert!(!revoked.is_revoked(&claims));
        revoked.revoke(&claims, 1_000);
        assert!(revoked.is_revoked(&claims));
    }
}
