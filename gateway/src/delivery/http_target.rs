//! The HTTP destination: one signed POST per attempt, classified by the answer.
//!
//! Owns the pooled client (one per destination; keep-alive, http and https with the system's
//! root certificates), the Standard Webhooks headers, the per-attempt deadline, and reading
//! the answer: status, `Retry-After`, `Location`, and at most [`DRAIN_LIMIT`] bytes of body.
//! It never follows redirects, never reads proxy environment variables (hyper-util's legacy
//! client only uses a proxy when given one), and never puts the URL's path, query or
//! credentials or the signing key into an error text.

use super::address_policy::{AddressPolicy, GuardedResolver, literal_ip_range};
use super::signature::{Signer, wire_id};
use super::{AttemptVerdict, DeliveryError, Outcome, Outgoing};
use crate::config::HttpDestinationSettings;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER, USER_AGENT};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::error::Error as _;
use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

const USER_AGENT_VALUE: &str = concat!("webhook-gateway/", env!("CARGO_PKG_VERSION"));
const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// Response bytes read (and discarded) so the connection can go back to the pool; a larger
/// body closes the connection instead of being read to the end.
pub(super) const DRAIN_LIMIT: usize = 64 * 1024;
/// Response body bytes quoted in the error text of a failed attempt.
const QUOTED_BYTES: usize = 200;
/// Idle pooled connections are closed after this. Short on purpose: many servers (Node's
/// default is 5 s) close idle keep-alive connections early, and a request racing that close
/// fails as a spurious retry.
const POOL_IDLE: Duration = Duration::from_secs(4);

pub(super) struct HttpTarget {
    url: Uri,
    timeout: Duration,
    signer: Signer,
    transport: Transport,
}

/// Plain http needs no TLS roots, so a machine without them can still reach http URLs.
enum Transport {
    Plain(Client<GuardedConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<GuardedConnector>, Full<Bytes>>),
}

type GuardedConnector = HttpConnector<GuardedResolver>;

impl fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Scheme and host only: paths and queries may carry tokens.
        f.debug_struct("HttpTarget")
            .field("scheme", &self.url.scheme_str())
            .field("host", &self.url.host())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpTarget {
    pub(super) fn new(
        name: &str,
        settings: &HttpDestinationSettings,
    ) -> Result<Self, DeliveryError> {
        let url = settings.url.clone();
        if url.host().is_none_or(str::is_empty) {
            return Err(DeliveryError::MissingHost {
                destination: name.to_owned(),
            });
        }
        let signer = Signer::new(settings.signing_key.expose());
        let policy = if settings.allow_private_network {
            AddressPolicy::AllowPrivate
        } else {
            AddressPolicy::PublicOnly
        };
        // Literal IPs never reach the resolver (the connector parses them itself), so they are
        // checked here; the config compiler refuses them earlier with the key's position.
        if let (AddressPolicy::PublicOnly, Some(range)) = (policy, literal_ip_range(&url)) {
            return Err(DeliveryError::DeniedAddress {
                destination: name.to_owned(),
                range,
            });
        }
        let transport = match url.scheme_str() {
            Some("http") => Transport::Plain(client_builder().build(tcp_connector(policy, true))),
            Some("https") => {
                let connector =
                    tls_connector(policy).map_err(|reason| DeliveryError::TlsRoots {
                        destination: name.to_owned(),
                        reason,
                    })?;
                Transport::Tls(client_builder().build(connector))
            }
            other => {
                return Err(DeliveryError::UnsupportedScheme {
                    destination: name.to_owned(),
                    scheme: other.unwrap_or("(none)").to_owned(),
                });
            }
        };
        Ok(Self {
            url,
            timeout: settings.timeout,
            signer,
            transport,
        })
    }

    pub(super) async fn send(&self, out: &Outgoing<'_>) -> Outcome {
        let request = match self.request(out) {
            Ok(request) => request,
            Err(e) => return stop(format!("cannot build the request: {e}")),
        };
        // One deadline for connect + request + response head; the body drain gets what is left.
        let deadline = Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline, self.transport.request(request)).await {
            Err(_) => Outcome::retry(format!(
                "timed out after {}",
                humantime::format_duration(self.timeout)
            )),
            Ok(Err(e)) => Outcome::retry(describe_client_error(&e)),
            Ok(Ok(response)) => classify(response, deadline).await,
        }
    }

    fn request(&self, out: &Outgoing<'_>) -> Result<Request<Full<Bytes>>, http::Error> {
        let body = Bytes::copy_from_slice(out.envelope_json.as_bytes());
        // Before the epoch only on a broken clock; 0 then fails the receiver's tolerance check,
        // which is the honest outcome.
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let id = wire_id(out.webhook_id);
        let signature = self.signer.header(&id, timestamp, &body);
        Request::post(self.url.clone())
            .header(CONTENT_TYPE, CLOUDEVENTS_JSON)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header("webhook-id", id.as_ref())
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature)
            .body(Full::new(body))
    }
}

impl Transport {
    fn request(&self, request: Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            Self::Plain(client) => client.request(request),
            Self::Tls(client) => client.request(request),
        }
    }
}

fn client_builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE);
    builder
}

fn tcp_connector(policy: AddressPolicy, enforce_http: bool) -> GuardedConnector {
    let mut tcp = HttpConnector::new_with_resolver(GuardedResolver { policy });
    tcp.enforce_http(enforce_http);
    tcp.set_nodelay(true);
    tcp
}

/// The TLS connector for a policy, built once per process: loading the native roots reads and
/// parses the whole system store, which config reloads should not repeat. A changed system
/// store is picked up on restart; a failure is remembered too, and only https destinations see
/// it.
fn tls_connector(policy: AddressPolicy) -> Result<HttpsConnector<GuardedConnector>, String> {
    type Built = Result<HttpsConnector<GuardedConnector>, String>;
    static PUBLIC_ONLY: OnceLock<Built> = OnceLock::new();
    static ALLOW_PRIVATE: OnceLock<Built> = OnceLock::new();
    let cell = match policy {
        AddressPolicy::PublicOnly => &PUBLIC_ONLY,
        AddressPolicy::AllowPrivate => &ALLOW_PRIVATE,
    };
    cell.get_or_init(|| {
        let builder = HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| e.to_string())?;
        Ok(builder
            .https_only()
            .enable_http1()
            .wrap_connector(tcp_connector(policy, false)))
    })
    .clone()
}

/// A request that cannot even be built will not build next time either.
fn stop(error: String) -> Outcome {
    Outcome {
        verdict: AttemptVerdict::Stop,
        status: None,
        error: Some(error),
        retry_after: None,
    }
}

async fn classify(response: Response<Incoming>, deadline: Instant) -> Outcome {
    let status = response.status();
    let headers = response.headers();
    let retry_after = if status.is_success() {
        None
    } else {
        headers.get(RETRY_AFTER).and_then(parse_retry_after)
    };
    let location = headers.get(LOCATION).map(|v| printable(v.as_bytes()));
    let quoted = drain(response.into_body(), deadline).await;
    let (verdict, error) = if status.is_success() {
        (AttemptVerdict::Delivered, None)
    } else if status == StatusCode::GONE {
        let text = "HTTP 410 Gone: the destination asked us to stop sending; not retried";
        (AttemptVerdict::Stop, Some(text.to_owned()))
    } else if status.is_redirection() {
        let location = location.unwrap_or_else(|| "none".into());
        let text = format!("redirect not followed (Location: {location}): HTTP {status}");
        (AttemptVerdict::Retry, Some(text))
    } else if quoted.is_empty() {
        (AttemptVerdict::Retry, Some(format!("HTTP {status}")))
    } else {
        (
            AttemptVerdict::Retry,
            Some(format!("HTTP {status}: {quoted}")),
        )
    };
    Outcome {
        verdict,
        status: Some(status.as_u16()),
        error,
        retry_after,
    }
}

/// Reads and discards the body up to [`DRAIN_LIMIT`] bytes or the deadline, whichever comes
/// first, and returns its start for error texts. A body cut short is dropped, which closes
/// that connection instead of returning it to the pool; the verdict does not depend on it.
async fn drain(mut body: Incoming, deadline: Instant) -> String {
    let mut kept = Vec::new();
    let read = async {
        let mut total = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                total = total.saturating_add(data.len());
                let room = QUOTED_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
                if total > DRAIN_LIMIT {
                    break;
                }
            }
        }
    };
    // Running out of time here only costs the connection, not the attempt.
    let _elapsed = tokio::time::timeout_at(deadline, read).await;
    printable(&kept)
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3). A date in the past is 0.
pub(super) fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64 is "very long"; next_wait caps it at the backoff maximum.
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Bytes from the other side, made safe for one log line: lossy UTF-8, control characters as
/// spaces, at most [`QUOTED_BYTES`] characters.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars()
        .take(QUOTED_BYTES)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A readable reason from hyper-util's error, whose own `Display` is only "client error
/// (Connect)": the common cases get short names, the rest the whole source chain.
fn describe_client_error(err: &hyper_util::client::legacy::Error) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut io_kind = None;
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        let message = e.to_string();
        // Some errors repeat their source in their own message; keep each text once.
        if !messages.iter().any(|m| m.contains(&message)) {
            messages.push(message);
        }
        source = e.source();
    }
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => return "connection refused".into(),
        Some(std::io::ErrorKind::ConnectionReset) => return "connection reset by peer".into(),
        _ => {}
    }
    let detail = if messages.is_empty() {
        err.to_string()
    } else {
        messages.join(": ")
    };
    let stage = if err.is_connect() {
        "connect failed"
    } else {
        "request failed"
    };
    format!("{stage}: {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let parse = |s: &str| parse_retry_after(&HeaderValue::from_str(s).expect("header"));
        assert_eq!(parse("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let wait = parse(&later).expect("date parses");
        assert!(wait > Duration::from_secs(115) && wait <= Duration::from_secs(120));
        assert_eq!(parse("-5"), None);
        assert_eq!(parse("soon"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn printable_strips_control_characters_and_truncates() {
        assert_eq!(printable(b"  oops\r\n\x1b[31m"), "oops   [31m");
        assert_eq!(printable(&[b'a'; 500]).len(), QUOTED_BYTES);
        assert_eq!(printable(&[0xff, b'x']), "\u{fffd}x");
    }
}
