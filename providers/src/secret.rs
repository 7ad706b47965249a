//! [`Secret`]: a resolved secret value (signing key, token, password) that never prints.

use std::fmt;

/// A resolved secret. Compare it only through constant-time code (HMAC verification,
/// `subtle`), which is why it has no `PartialEq`; never format it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether two secrets hold the same bytes, in constant time (for telling whether a
    /// reloaded config changed a key; request data never reaches this).
    pub fn same_as(&self, other: &Secret) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new(b"whsec_topsecret".to_vec());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn same_as_compares_every_byte() {
        let s = Secret::new(b"abc".to_vec());
        assert!(s.same_as(&Secret::new(b"abc".to_vec())));
        assert!(!s.same_as(&Secret::new(b"abd".to_vec())));
        assert!(!s.same_as(&Secret::new(b"ab".to_vec())));
    }
}
