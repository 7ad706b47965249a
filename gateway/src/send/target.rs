//! Where `gateway send` sends and how it authenticates: the URL, the provider, and the
//! provider's credentials, taken from the command line or from one `[sources.NAME]` of the
//! gateway's config file.
//!
//! Reads only `server.listen` and the chosen source's table, so a source's secrets need not be
//! set to send to another one; the full validation is `gateway check`'s. Secrets are taken only
//! as references (`env:NAME`, `file:PATH`) and never appear in an error message.

use super::SendError;
use super::samples::Provider;
use gateway::config::{Secret, SecretRef};
use std::path::Path;
use toml::{Table, Value};

/// The Ledger signature scheme `gateway send` signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scheme {
    /// `X-Ledger-Signature: t=..,v1=..`
    Ledger,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
}

/// How a Ledig delivery carries its token.
#[derive(Debug)]
pub(crate) enum TokenPlace {
    Header(String),
    /// Appended to the URL as its last path segment.
    Path,
}

/// A provider's way of authenticating, with resolved secrets.
#[derive(Debug)]
pub(crate) enum Credentials {
    Ledger {
        secret: Secret,
        scheme: Scheme,
    },
    Ledig {
        token: Option<(Secret, TokenPlace)>,
        basic_auth: Option<(Secret, Secret)>,
    },
}

/// Everything needed to send to one source.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) provider: Provider,
    pub(crate) credentials: Credentials,
}

/// What the command line says about the target.
#[derive(Debug)]
pub(crate) struct TargetArgs<'a> {
    pub(crate) config: &'a Path,
    /// `--config` given explicitly: a missing file is then an error even with `--url`.
    pub(crate) config_given: bool,
    pub(crate) source: Option<&'a str>,
    /// The provider asked for (`--provider`) or implied by the event type.
    pub(crate) provider: Option<Provider>,
    pub(crate) url: Option<&'a str>,
    pub(crate) secret: Option<&'a str>,
    pub(crate) token: Option<&'a str>,
    pub(crate) scheme: Option<Scheme>,
}

/// The chosen `[sources.NAME]` and the `[server] listen` of its config.
struct ConfiguredSource {
    name: String,
    table: Table,
    listen: Option<String>,
}

pub(crate) fn resolve(args: &TargetArgs<'_>) -> Result<Target, SendError> {
    let configured = match read_config(args)? {
        Some(config) => Some(pick_source(args, &config)?),
        None => None,
    };
    let provider = match &configured {
        Some(c) => provider_of(c)?,
        None => args.provider.ok_or_else(|| {
            SendError::Usage("which provider? name a TYPE, or give --provider".into())
        })?,
    };
    if let (Some(asked), Some(c)) = (args.provider, &configured)
        && asked != provider
    {
        return Err(SendError::Usage(format!(
            "source `{}` is a {} source, not {}",
            c.name,
            provider.name(),
            asked.name()
        )));
    }
    let mut url = match (args.url, &configured) {
        (Some(url), _) => url.to_owned(),
        (None, Some(c)) => url_of(c)?,
        (None, None) => return Err(SendError::Usage("give --url or --config".into())),
    };
    let credentials = match provider {
        Provider::Ledger => ledger_credentials(args, configured.as_ref())?,
        Provider::Ledig => ledig_credentials(args, configured.as_ref())?,
    };
    if let Credentials::Ledig {
        token: Some((token, TokenPlace::Path)),
        ..
    } = &credentials
    {
        let token = std::str::from_utf8(token.expose())
            .map_err(|_| SendError::Usage("the Ledig token is not UTF-8".into()))?;
        url = format!("{}/{token}", url.trim_end_matches('/'));
    }
    Ok(Target {
        url,
        provider,
        credentials,
    })
}

fn read_config(args: &TargetArgs<'_>) -> Result<Option<Table>, SendError> {
    let path = args.config;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(_) if args.url.is_some() && !args.config_given && args.source.is_none() => {
            return Ok(None);
        }
        Err(e) => {
            return Err(SendError::Config {
                file: path.display().to_string(),
                message: format!(
                    "cannot read it: {e} (give --config FILE, or --url and --provider)"
                ),
            });
        }
    };
    text.parse::<Table>()
        .map(Some)
        .map_err(|e| SendError::Config {
            file: path.display().to_string(),
            message: format!("not valid TOML: {}", e.message()),
        })
}

fn pick_source(args: &TargetArgs<'_>, config: &Table) -> Result<ConfiguredSource, SendError> {
    let listen = config
        .get("server")
        .and_then(|s| s.get("listen"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let sources = config
        .get("sources")
        .and_then(Value::as_table)
        .cloned()
        .unwrap_or_default();
    let chosen = if let Some(name) = args.source {
        let table = sources.get(name).and_then(Value::as_table).ok_or_else(|| {
            SendError::Usage(format!(
                "no source `{name}` in the config (it has: {})",
                names(sources.keys())
            ))
        })?;
        (name.to_owned(), table.clone())
    } else {
        let wanted = args.provider;
        let fits: Vec<(&String, &Table)> = sources
            .iter()
            .filter_map(|(n, v)| v.as_table().map(|t| (n, t)))
            .filter(|(_, t)| {
                let p = t.get("provider").and_then(Value::as_str);
                wanted.is_none_or(|w| p == Some(w.name()))
            })
            .collect();
        match fits.as_slice() {
            [(name, table)] => ((*name).clone(), (*table).clone()),
            [] => {
                return Err(SendError::Usage(format!(
                    "the config has no {}source{}",
                    wanted.map_or(String::new(), |w| format!("{} ", w.name())),
                    if args.url.is_some() {
                        "; give --provider and the credentials without --config"
                    } else {
                        ""
                    }
                )));
            }
            several => {
                return Err(SendError::Usage(format!(
                    "the config has several {}sources ({}): pick one with --source",
                    wanted.map_or(String::new(), |w| format!("{} ", w.name())),
                    names(several.iter().map(|(n, _)| *n))
                )));
            }
        }
    };
    Ok(ConfiguredSource {
        name: chosen.0,
        table: chosen.1,
        listen,
    })
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let all: Vec<&str> = keys.map(String::as_str).collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

fn provider_of(c: &ConfiguredSource) -> Result<Provider, SendError> {
    let text = c.table.get("provider").and_then(Value::as_str);
    text.and_then(Provider::parse).ok_or_else(|| {
        SendError::Usage(format!(
            "source `{}` has no provider `ledger` or `ledig`",
            c.name
        ))
    })
}

/// `http://<listen><path>`, with a wildcard listen address replaced by the loopback one.
fn url_of(c: &ConfiguredSource) -> Result<String, SendError> {
    let listen = c
        .listen
        .as_deref()
        .ok_or_else(|| SendError::Usage("the config has no server.listen: give --url".into()))?;
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        SendError::Usage(format!(
            "server.listen `{listen}` is not IP:PORT: give --url"
        ))
    })?;
    if addr.port() == 0 {
        return Err(SendError::Usage(
            "server.listen has port 0 (a free port chosen at start): give --url with the port the gateway printed".into(),
        ));
    }
    let host = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let path = c
        .table
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| SendError::Usage(format!("source `{}` has no path", c.name)))?;
    Ok(format!("http://{host}:{}{path}", addr.port()))
}

/// A secret from a reference given on the command line or written in the config.
fn secret(reference: &str, what: &str) -> Result<Secret, SendError> {
    SecretRef::parse(reference)
        .and_then(|r| r.resolve())
        .map_err(|e| SendError::Secret {
            what: what.to_owned(),
            message: e.to_string(),
        })
}

fn ledger_credentials(
    args: &TargetArgs<'_>,
    configured: Option<&ConfiguredSource>,
) -> Result<Credentials, SendError> {
    let table = configured.map(|c| &c.table);
    let secret = match (args.secret, table) {
        (Some(reference), _) => secret(reference, "--secret")?,
        (None, Some(t)) => {
            // The current secret is the first: it is the one Ledger signs with.
            let first = match t.get("secrets") {
                Some(Value::Array(list)) => list.first().and_then(Value::as_str),
                _ => None,
            };
            let reference = first.ok_or_else(|| {
                SendError::Usage("the source has no `secrets` list: give --secret env:NAME".into())
            })?;
            secret(reference, "the source's secrets[0]")?
        }
        (None, None) => {
            return Err(SendError::Usage(
                "a Ledger source needs --secret env:NAME or file:PATH".into(),
            ));
        }
    };
    let configured_scheme = table
        .and_then(|t| t.get("signature"))
        .and_then(Value::as_str);
    let scheme = match (args.scheme, configured_scheme) {
        (Some(s), _) => s,
        (None, Some("standard-webhooks")) => Scheme::StandardWebhooks,
        // "ledger", "any" or not set: the scheme Ledger's own docs describe.
        (None, _) => Scheme::Ledger,
    };
    Ok(Credentials::Ledger { secret, scheme })
}

fn ledig_credentials(
    args: &TargetArgs<'_>,
    configured: Option<&ConfiguredSource>,
) -> Result<Credentials, SendError> {
    let table = configured.map(|c| &c.table);
    let in_path = table
        .and_then(|t| t.get("token_in_path"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let place = if in_path {
        TokenPlace::Path
    } else {
        let header = table
            .and_then(|t| t.get("token_header"))
            .and_then(Value::as_str)
            .unwrap_or("X-Ledig-Token");
        TokenPlace::Header(header.to_owned())
    };
    let token = match (args.token, table.and_then(|t| t.get("token"))) {
        (Some(reference), _) => Some(secret(reference, "--token")?),
        (None, Some(Value::String(reference))) => Some(secret(reference, "the source's token")?),
        (None, _) => None,
    };
    let basic_auth = match table
        .and_then(|t| t.get("basic_auth"))
        .and_then(Value::as_table)
    {
        Some(auth) => {
            let user = auth.get("username").and_then(Value::as_str).unwrap_or("");
            // The gateway takes a plain username or a reference; so does this.
            let user = if user.starts_with("env:") || user.starts_with("file:") {
                secret(user, "the source's basic_auth.username")?
            } else {
                Secret::new(user.as_bytes().to_vec())
            };
            let password = auth.get("password").and_then(Value::as_str).unwrap_or("");
            Some((user, secret(password, "the source's basic_auth.password")?))
        }
        None => None,
    };
    Ok(Credentials::Ledig {
        token: token.map(|t| (t, place)),
        basic_auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args<'a>(config: &'a Path) -> TargetArgs<'a> {
        TargetArgs {
            config,
            config_given: true,
            source: None,
            provider: None,
            url: None,
            secret: None,
            token: None,
            scheme: None,
        }
    }

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("g.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    const CONFIG: &str = r#"
[server]
listen = "0.0.0.0:9090"
[sources.l]
provider = "ledger"
path = "/in/ledger"
secrets = ["file:SECRET_FILE"]
signature = "standard-webhooks"
[sources.p]
provider = "ledig"
path = "/in/ledig"
token = "file:TOKEN_FILE"
token_in_path = true
[sources.h]
provider = "ledig"
path = "/in/ledig-h"
token = "env:SEND_TEST_UNSET_TOKEN"
"#;

    fn config(dir: &Path) -> std::path::PathBuf {
        std::fs::write(dir.join("secret"), "whsec_c2VjcmV0\n").expect("write");
        std::fs::write(dir.join("token"), "tok123").expect("write");
        let text = CONFIG
            .replace("SECRET_FILE", &dir.join("secret").display().to_string())
            .replace("TOKEN_FILE", &dir.join("token").display().to_string());
        write(dir, &text)
    }

    #[test]
    fn a_source_gives_url_provider_secret_and_scheme() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = config(dir.path());
        let target = resolve(&TargetArgs {
            provider: Some(Provider::Ledger),
            ..args(&path)
        })
        .expect("resolves");
        assert_eq!(target.url, "http://127.0.0.1:9090/in/ledger");
        let Credentials::Ledger { secret, scheme } = target.credentials else {
            panic!("ledger credentials");
        };
        assert_eq!(secret.expose(), b"whsec_c2VjcmV0");
        assert_eq!(scheme, Scheme::StandardWebhooks);
    }

    #[test]
    fn a_token_in_the_path_goes_into_the_url_and_other_sources_need_no_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = config(dir.path());
        let target = resolve(&TargetArgs {
            source: Some("p"),
            ..args(&path)
        })
        .expect("resolves although source h's variable is unset");
        assert_eq!(target.url, "http://127.0.0.1:9090/in/ledig/tok123");
        assert_eq!(target.provider, Provider::Ledig);
    }

    #[test]
    fn ambiguity_unknown_sources_and_unresolved_secrets_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = config(dir.path());
        let several = resolve(&TargetArgs {
            provider: Some(Provider::Ledig),
            ..args(&path)
        });
        assert!(matches!(several, Err(SendError::Usage(m)) if m.contains("several ledig sources")));
        let unknown = resolve(&TargetArgs {
            source: Some("x"),
            ..args(&path)
        });
        assert!(matches!(unknown, Err(SendError::Usage(m)) if m.contains("no source `x`")));
        let unset = resolve(&TargetArgs {
            source: Some("h"),
            ..args(&path)
        });
        assert!(
            matches!(unset, Err(SendError::Secret { message, .. }) if message.contains("SEND_TEST_UNSET_TOKEN"))
        );
    }

    #[test]
    fn a_literal_secret_is_refused_without_being_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = config(dir.path());
        let err = resolve(&TargetArgs {
            source: Some("l"),
            secret: Some("whsec_literal_value"),
            ..args(&path)
        })
        .expect_err("a literal is not a reference");
        assert!(!err.to_string().contains("literal_value"), "{err}");
    }
}
