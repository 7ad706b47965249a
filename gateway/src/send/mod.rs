//! `gateway send`: sends a sample event of any provider and type (or a body from a file) to a
//! running gateway, signed or authenticated exactly as the provider would, and prints each
//! answer. The gateway's counterpart of `stripe trigger`, for trying routes, dedup and load by
//! hand.
//!
//! Owns the command's flow (what to send, how often, at what rate, the exit status); the
//! samples, the target and the signed request are its submodules'. It never takes a secret
//! as a literal on the command line and never prints one.

mod request;
mod samples;
mod target;

use clap::Args;
use request::{Answer, Sender, Signed};
use samples::Provider;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::{Scheme, TargetArgs};

/// Requests in flight at once with `--rate`; past it the schedule waits for answers.
const MAX_IN_FLIGHT: usize = 256;

/// Why `gateway send` could not do what it was asked (exit status 2; a refused delivery is 1).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("{0}")]
    Usage(String),
    #[error("{file}: {message}")]
    Config { file: String, message: String },
    /// Names the reference, never the value.
    #[error("{what}: {message}")]
    Secret { what: String, message: String },
    #[error("cannot read {path}: {message}")]
    Body { path: String, message: String },
    #[error("request failed: {0}")]
    Http(String),
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The event type: `transaction.completed`, `ledig.crypto_received`, ... (see --list).
    /// With --body, only says which provider when nothing else does.
    #[arg(value_name = "TYPE")]
    event_type: Option<String>,
    /// Print every type that has a built-in sample, and exit.
    #[arg(long)]
    list: bool,
    /// The gateway's config: where it listens, and the source's path and credentials
    /// [default: config/gateway.toml].
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The configured source to send to (default: the config's only source of the provider).
    #[arg(long)]
    source: Option<String>,
    /// The provider, when neither the type nor --source says it.
    #[arg(long, value_enum)]
    provider: Option<Provider>,
    /// Where to send (default: http://<server.listen><the source's path>).
    #[arg(long)]
    url: Option<String>,
    /// Send this file's bytes as the body instead of a sample.
    #[arg(long, value_name = "FILE")]
    body: Option<PathBuf>,
    /// The Ledger signing secret, as a reference (default: the source's first secret).
    #[arg(long, value_name = "env:NAME|file:PATH")]
    secret: Option<String>,
    /// The Ledig token, as a reference (default: the source's token).
    #[arg(long, value_name = "env:NAME|file:PATH")]
    token: Option<String>,
    /// The Ledger signature scheme (default: standard-webhooks for a source that accepts only
    /// it, else ledger).
    #[arg(long, value_enum)]
    scheme: Option<Scheme>,
    /// How many events to send (each with fresh ids, unless --id or --body).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Send each signed request a second time, byte for byte, after its answer.
    #[arg(long)]
    duplicate: bool,
    /// Send at this rate (`20/s`, `5/m`, or events per second), concurrently; default: one
    /// after another.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Use ID instead of a fresh random part in the sample's ids (`--id demo1`: `evt_demo1`,
    /// `txn_demo1`): sends with the same ID are the same event.
    #[arg(long, value_parser = parse_id)]
    id: Option<String>,
    /// How long to wait for each answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let (number, per) = match text.split_once('/') {
        Some((n, "s")) => (n, 1.0),
        Some((n, "m")) => (n, 60.0),
        Some(_) => return Err("write the rate as R/s, R/m or a number (per second)".into()),
        None => (text, 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r / per),
        _ => Err(format!("`{number}` is not a positive number")),
    }
}

fn parse_id(text: &str) -> Result<String, String> {
    let plain = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if plain {
        Ok(text.to_owned())
    } else {
        Err("1 to 64 letters, digits, `_` or `-`".into())
    }
}

/// What to put in each request's body.
enum Content {
    Sample {
        provider: Provider,
        event_type: String,
    },
    File(bytes::Bytes),
}

pub(crate) fn run(args: &SendArgs) -> Result<ExitCode, SendError> {
    if args.list {
        let mut out = std::io::stdout().lock();
        for provider in [Provider::Ledger, Provider::Ledig] {
            for t in samples::stored_types(provider) {
                // A closed stdout (`| head`) ends the list; nothing else to do.
                if writeln!(out, "{t}").is_err() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let sample = match args.event_type.as_deref() {
        Some(t) => Some(samples::find(t).ok_or_else(|| {
            SendError::Usage(format!(
                "no sample of type `{t}` (`gateway send --list` prints them)"
            ))
        })?),
        None => None,
    };
    let provider_hint = match (args.provider, sample) {
        (Some(asked), Some((p, t))) if asked != p => {
            return Err(SendError::Usage(format!(
                "`{t}` is a {} type, not {}",
                p.name(),
                asked.name()
            )));
        }
        (Some(asked), _) => Some(asked),
        (None, Some((p, _))) => Some(p),
        (None, None) => None,
    };
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("config/gateway.toml"));
    let target = target::resolve(&TargetArgs {
        config: &config,
        config_given: args.config.is_some(),
        source: args.source.as_deref(),
        provider: provider_hint,
        url: args.url.as_deref(),
        secret: args.secret.as_deref(),
        token: args.token.as_deref(),
        scheme: args.scheme,
    })?;
    let content = match (&args.body, sample) {
        (Some(path), _) => Content::File(
            std::fs::read(path)
                .map_err(|e| SendError::Body {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?
                .into(),
        ),
        (None, Some((provider, t))) if provider == target.provider => Content::Sample {
            provider,
            event_type: t.to_owned(),
        },
        (None, Some((provider, t))) => {
            return Err(SendError::Usage(format!(
                "`{t}` is a {} type; the source is {}",
                provider.name(),
                target.provider.name()
            )));
        }
        (None, None) => {
            return Err(SendError::Usage(
                "name an event type (`gateway send --list`) or give --body FILE".into(),
            ));
        }
    };
    let sender = Sender::new(&target.url, args.timeout)?;
    let shown_url = shown_url(&target);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| SendError::Usage(format!("cannot start the async runtime: {e}")))?;
    let plan = Plan {
        sender,
        shown_url,
        duplicate: args.duplicate,
    };
    let tally = runtime.block_on(send_all(
        Arc::new(plan),
        &target,
        &content,
        args.id.as_deref(),
        args.count,
        args.rate,
    ))?;
    Ok(tally.finish(args.count > 1 || args.duplicate))
}

/// The URL as printed: a token in the path is not shown.
fn shown_url(target: &target::Target) -> String {
    match &target.credentials {
        target::Credentials::Ledig {
            token: Some((_, target::TokenPlace::Path)),
            ..
        } => match target.url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/<token>"),
            None => target.url.clone(),
        },
        _ => target.url.clone(),
    }
}

/// What every request of a run shares.
struct Plan {
    sender: Sender,
    shown_url: String,
    duplicate: bool,
}

/// Answers counted by status (`None`: no answer).
#[derive(Default)]
struct Tally {
    by_status: BTreeMap<Option<u16>, u64>,
    started: Option<Instant>,
}

impl Tally {
    fn add(&mut self, status: Option<u16>) {
        *self.by_status.entry(status).or_default() += 1;
    }

    /// Prints the summary (for more than one request) and gives the exit status: 0 when
    /// every answer was a 2xx.
    fn finish(&self, summary: bool) -> ExitCode {
        let total: u64 = self.by_status.values().sum();
        if summary {
            let secs = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
            let parts: Vec<String> = self
                .by_status
                .iter()
                .map(|(s, n)| match s {
                    Some(s) => format!("{n} x {s}"),
                    None => format!("{n} x no answer"),
                })
                .collect();
            let rate = if secs > 0.0 { total as f64 / secs } else { 0.0 };
            // A closed stdout is no reason to fail the run.
            let _ = writeln!(
                std::io::stdout().lock(),
                "sent {total} request(s) in {secs:.2}s ({rate:.1}/s): {}",
                parts.join(", ")
            );
        }
        let all_ok = self
            .by_status
            .keys()
            .all(|s| s.is_some_and(|s| (200..300).contains(&s)));
        if all_ok && total > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

async fn send_all(
    plan: Arc<Plan>,
    target: &target::Target,
    content: &Content,
    id: Option<&str>,
    count: u64,
    rate: Option<f64>,
) -> Result<Tally, SendError> {
    let mut tally = Tally {
        started: Some(Instant::now()),
        ..Tally::default()
    };
    let mut ticker = rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..count {
        let body = match content {
            Content::File(bytes) => bytes.clone(),
            Content::Sample {
                provider,
                event_type,
            } => {
                let id = id.map_or_else(samples::fresh_id, str::to_owned);
                samples::body(*provider, event_type, &id)
                    .ok_or_else(|| SendError::Usage(format!("no sample of type `{event_type}`")))?
                    .into()
            }
        };
        match ticker.as_mut() {
            None => {
                let signed = request::sign(target, body)?;
                for status in exchange(&plan, &signed).await {
                    tally.add(status);
                }
            }
            Some(ticker) => {
                ticker.tick().await;
                let slot = Arc::clone(&slots)
                    .acquire_owned()
                    .await
                    .map_err(|e| SendError::Usage(e.to_string()))?;
                // Signed when its turn comes, so the timestamp is the send time.
                let signed = request::sign(target, body)?;
                let plan = Arc::clone(&plan);
                running.spawn(async move {
                    let statuses = exchange(&plan, &signed).await;
                    drop(slot);
                    statuses
                });
            }
        }
        while let Some(done) = running.try_join_next() {
            for status in done.map_err(|e| SendError::Usage(e.to_string()))? {
                tally.add(status);
            }
        }
    }
    while let Some(done) = running.join_next().await {
        for status in done.map_err(|e| SendError::Usage(e.to_string()))? {
            tally.add(status);
        }
    }
    Ok(tally)
}

/// Sends one request (twice with `--duplicate`), printing each request and its answer
/// together so that concurrent sends do not interleave. Returns the statuses.
async fn exchange(plan: &Plan, signed: &Signed) -> Vec<Option<u16>> {
    let times = if plan.duplicate { 2 } else { 1 };
    let mut statuses = Vec::with_capacity(times);
    for round in 0..times {
        let again = if round == 0 {
            ""
        } else {
            "  (the same request again)"
        };
        let outcome = plan.sender.send(signed).await;
        let answer = match &outcome {
            Ok(Answer { status, body }) => format!("{status} {body}"),
            Err(e) => format!("error: {e}"),
        };
        statuses.push(outcome.as_ref().ok().map(|a| a.status));
        let _ = writeln!(
            std::io::stdout().lock(),
            "POST {}  {}{again}\n{answer}",
            plan.shown_url,
            signed.label
        );
    }
    statuses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_per_second_and_per_minute() {
        assert_eq!(parse_rate("20/s"), Ok(20.0));
        assert_eq!(parse_rate("30/m"), Ok(0.5));
        assert_eq!(parse_rate("4"), Ok(4.0));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("5/h").is_err());
        assert!(parse_rate("NaN").is_err());
    }

    #[test]
    fn ids_are_plain_tokens() {
        assert!(parse_id("demo-1_A").is_ok());
        assert!(parse_id("a\"b").is_err());
        assert!(parse_id("").is_err());
    }
}
