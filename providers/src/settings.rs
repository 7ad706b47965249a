//! What one configured source needs to authenticate its deliveries: the provider and its
//! secrets, tokens and address rules, already validated by the gateway's config stage.
//!
//! Plain values only: this module never reads files or the environment (the config stage
//! resolves secret references into [`Secret`]s before building these).

use crate::Secret;
use std::time::Duration;

/// One `[sources.NAME]`: where it listens and how its deliveries are authenticated.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// The configured name; also the envelope's `source` and a metric label.
    pub name: String,
    /// The request path, e.g. `/webhooks/ledger`.
    pub path: String,
    pub provider: ProviderSettings,
}

#[derive(Debug, Clone)]
pub enum ProviderSettings {
    Ledger(LedgerSettings),
    Ledig(LedigSettings),
}

/// Which Ledger signature headers a source accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// `X-Ledger-Signature: t=..,v1=..`
    Ledger,
    /// `webhook-*` / `svix-*` headers.
    StandardWebhooks,
    /// Either of the two.
    Any,
}

#[derive(Debug, Clone)]
pub struct LedgerSettings {
    /// Every secret that may have signed a delivery (current first, then rotated-out ones).
    pub secrets: Vec<Secret>,
    pub scheme: SignatureScheme,
    /// Largest accepted distance between the signed timestamp and now.
    pub tolerance: Duration,
}

/// Where a Ledig source expects its shared token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// In this request header.
    Header(http::HeaderName),
    /// As the last path segment: `<path>/<token>`.
    Path,
}

#[derive(Debug, Clone)]
pub struct LedigSettings {
    pub token: Option<(Secret, TokenLocation)>,
    /// (username, password)
    pub basic_auth: Option<(Secret, Secret)>,
    /// Empty means any address.
    pub allow_ips: Vec<ipnet::IpNet>,
    /// How long after a state of an object was stored a copy of it still counts as the
    /// provider's retry (see [`crate::envelope::ObjectState`]).
    pub retry_window: Duration,
}

/// `retry_window` when the config sets none: longer than any retry schedule a provider that
/// retries "up to 3 times" plausibly runs, so a late retry is not processed twice.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(24 * 3600);
