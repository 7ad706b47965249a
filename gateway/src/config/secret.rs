//! Secret references (`env:NAME`, `file:PATH`) and the [`Secret`] value they resolve to.
//!
//! Secrets are never required inline in the config, and a resolved secret never prints: its
//! `Debug` is redacted so it cannot leak through logs or error messages by accident.

pub use gateway_providers::Secret;
use std::path::PathBuf;

/// Where a secret comes from, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

/// Why a secret reference could not be resolved. Messages name the reference, never the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Holds nothing of what was written: it may be the secret itself, however short.
    #[error("is not a secret reference (`env:NAME` or `file:PATH`); the value is not shown")]
    NotAReference,
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("environment variable {0} is empty")]
    EnvEmpty(String),
    #[error("cannot read secret file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("secret file {0} is empty")]
    FileEmpty(String),
}

impl SecretRef {
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        if let Some(name) = text.strip_prefix("env:").filter(|n| !n.is_empty()) {
            return Ok(Self::Env(name.to_owned()));
        }
        if let Some(path) = text.strip_prefix("file:").filter(|p| !p.is_empty()) {
            return Ok(Self::File(PathBuf::from(path)));
        }
        Err(SecretError::NotAReference)
    }

    /// Reads the secret from the environment or the file system.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            Self::Env(name) => match std::env::var_os(name) {
                None => Err(SecretError::EnvMissing(name.clone())),
                Some(v) if v.is_empty() => Err(SecretError::EnvEmpty(name.clone())),
                Some(v) => Ok(Secret::new(v.into_encoded_bytes())),
            },
            Self::File(path) => {
                let shown = path.display().to_string();
                let mut bytes = std::fs::read(path).map_err(|e| SecretError::File {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
                while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                    bytes.pop();
                }
                if bytes.is_empty() {
                    return Err(SecretError::FileEmpty(shown));
                }
                Ok(Secret::new(bytes))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_inline_values_are_not_echoed() {
        assert_eq!(
            SecretRef::parse("env:X").ok(),
            Some(SecretRef::Env("X".into()))
        );
        // However short: a short inline value is as much a secret as a long one.
        for inline in ["whsec_abcdefghijkl", "hunter2", "x"] {
            let err = SecretRef::parse(inline).err().map(|e| e.to_string());
            assert!(err.is_some_and(|e| !e.contains(inline)), "{inline}");
        }
    }

    #[test]
    fn file_secrets_trim_the_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, "abc\n").expect("write");
        let secret = SecretRef::File(path).resolve().expect("resolves");
        assert_eq!(secret.expose(), b"abc");
    }
}
