//! One delivery as the provider would make it: the body signed (Ledger, either scheme) or
//! carrying its token and credentials (Ledig) with the headers the provider sends, and the
//! HTTP exchange that sends it and reads the answer.
//!
//! Signatures come from the providers crate's signers, the same code the tests and loadgen
//! sign with. Never prints a secret: the URL shown for a token-in-path source hides the token.

use super::SendError;
use super::target::{Credentials, Scheme, Target, TokenPlace};
use base64::Engine as _;
use bytes::Bytes;
use gateway::metrics::log_text;
use gateway::providers::signing::{LedgerSigner, StandardSigner};
use gateway::providers::standard_webhooks_key;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most answer bytes read and shown.
const MAX_ANSWER: usize = 64 * 1024;
const USER_AGENT: &str = concat!("gateway-send/", env!("CARGO_PKG_VERSION"));

/// A request ready to go out, and again for `--duplicate` (same bytes, same headers).
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    pub(crate) body: Bytes,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// `type id` from the body, for the line printed before the answer.
    pub(crate) label: String,
}

/// What the gateway answered.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// The body as text, escaped when it holds anything that could forge output lines.
    pub(crate) body: String,
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), SendError> {
    let bad = |what: &str| SendError::Usage(format!("cannot send header {name}: {what}"));
    Ok((
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("not a header name"))?,
        HeaderValue::from_str(value).map_err(|_| bad("not a header value"))?,
    ))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The `id` and `type` a body names, if it is JSON with them (Ledger's own headers repeat
/// them; Ledig's `event` stands for the type).
fn id_and_type(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) else {
        return (None, None);
    };
    let text = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let id = text("id").or_else(|| {
        let data = map.get("data")?;
        data.get("id")
            .or_else(|| data.get("Alias"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    });
    (id, text("type").or_else(|| text("event")))
}

/// A Standard Webhooks id must be a plain token (no `.`, which would make the signed content
/// ambiguous); a body id that is not one is replaced by a fresh `msg_` id.
fn webhook_id(body_id: Option<&str>) -> String {
    match body_id {
        Some(id)
            if (1..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')) =>
        {
            id.to_owned()
        }
        _ => format!("msg_{}", super::samples::fresh_id()),
    }
}

/// Signs or authenticates `body` for `target` as of now.
pub(crate) fn sign(target: &Target, body: Bytes) -> Result<Signed, SendError> {
    let (id, event_type) = id_and_type(&body);
    let mut headers = vec![
        header("content-type", "application/json")?,
        header("user-agent", USER_AGENT)?,
    ];
    match &target.credentials {
        Credentials::Ledger { secret, scheme } => {
            let t = now_secs();
            // Ledger sends these beside its signature; the gateway keeps them, trusts them not.
            if let Some(id) = id.as_deref().filter(|v| HeaderValue::from_str(v).is_ok()) {
                headers.push(header("x-ledger-event-id", id)?);
            }
            if let Some(ty) = event_type
                .as_deref()
                .filter(|v| HeaderValue::from_str(v).is_ok())
            {
                headers.push(header("x-ledger-event-type", ty)?);
            }
            match scheme {
                Scheme::Ledger => {
                    let signature = LedgerSigner::new(secret.expose()).header(t, &body);
                    headers.push(header("x-ledger-signature", &signature)?);
                }
                Scheme::StandardWebhooks => {
                    let key = standard_webhooks_key(secret).ok_or_else(|| SendError::Secret {
                        what: "the Ledger secret".into(),
                        message:
                            "is not `whsec_<base64>`, which the standard-webhooks scheme needs"
                                .into(),
                    })?;
                    let msg_id = webhook_id(id.as_deref());
                    let signature = StandardSigner::new(&key).header(&msg_id, t, &body);
                    headers.push(header("webhook-id", &msg_id)?);
                    headers.push(header("webhook-timestamp", &t.to_string())?);
                    headers.push(header("webhook-signature", &signature)?);
                }
            }
        }
        Credentials::Ledig { token, basic_auth } => {
            if let Some((token, TokenPlace::Header(name))) = token {
                let value = std::str::from_utf8(token.expose())
                    .map_err(|_| SendError::Usage("the Ledig token is not UTF-8".into()))?;
                headers.push(header(name, value)?);
            }
            if let Some((user, password)) = basic_auth {
                let mut pair = user.expose().to_vec();
                pair.push(b':');
                pair.extend_from_slice(password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                headers.push(header("authorization", &format!("Basic {encoded}"))?);
            }
        }
    }
    let label = format!(
        "{}.{} {}",
        target.provider.name(),
        event_type.as_deref().unwrap_or("(no type)"),
        id.as_deref().unwrap_or("(no id)")
    );
    Ok(Signed {
        body,
        headers,
        label: printable(label.as_bytes()),
    })
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends requests to one URL over a pooled connection.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    client: HttpsClient,
    url: http::Uri,
    timeout: Duration,
}

impl Sender {
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, SendError> {
        let url: http::Uri = url
            .parse()
            .map_err(|_| SendError::Usage("--url is not a URL".into()))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) {
            return Err(SendError::Usage(
                "the URL must start with http:// or https://".into(),
            ));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| SendError::Usage(format!("cannot load the system's TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url,
            timeout,
        })
    }

    pub(crate) async fn send(&self, signed: &Signed) -> Result<Answer, SendError> {
        let mut builder = Request::post(self.url.clone());
        for (name, value) in &signed.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(signed.body.clone()))
            .map_err(|e| SendError::Usage(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| SendError::Http(format!("{e}{}", source_chain(&e))))?;
            let status = response.status().as_u16();
            #[allow(
                clippy::disallowed_methods,
                reason = "bounded: Limited stops at MAX_ANSWER, and the timeout below ends a slow answer"
            )]
            let collected = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| SendError::Http(format!("reading the answer: {e}")))?;
            Ok::<_, SendError>(Answer {
                status,
                body: printable(&collected.to_bytes()),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SendError::Http(format!("no answer within {:?}", self.timeout)))?
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// The answer as the user should see it: as sent when it is plain text on one line, else
/// quoted and escaped.
fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
        _ => log_text::bounded(&String::from_utf8_lossy(bytes), MAX_ANSWER).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send::samples::Provider;
    use gateway::config::Secret;

    fn names(signed: &Signed) -> Vec<&str> {
        signed.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn ledger_requests_carry_the_providers_headers() {
        let target = Target {
            url: "http://x/".into(),
            provider: Provider::Ledger,
            credentials: Credentials::Ledger {
                secret: Secret::new(b"whsec_c2VjcmV0".to_vec()),
                scheme: Scheme::StandardWebhooks,
            },
        };
        let body = Bytes::from_static(br#"{"id":"evt_1","type":"webhook.test","data":{}}"#);
        let signed = sign(&target, body).expect("signs");
        assert_eq!(
            names(&signed),
            [
                "content-type",
                "user-agent",
                "x-ledger-event-id",
                "x-ledger-event-type",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature"
            ]
        );
        assert_eq!(signed.label, "ledger.webhook.test evt_1");
    }

    #[test]
    fn ledig_requests_carry_token_and_basic_auth() {
        let target = Target {
            url: "http://x/".into(),
            provider: Provider::Ledig,
            credentials: Credentials::Ledig {
                token: Some((
                    Secret::new(b"tok".to_vec()),
                    TokenPlace::Header("X-Ledig-Token".into()),
                )),
                basic_auth: Some((Secret::new(b"ops".to_vec()), Secret::new(b"pw".to_vec()))),
            },
        };
        let signed = sign(&target, Bytes::from_static(b"{}")).expect("signs");
        let value = |n: &str| {
            signed
                .headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap_or_default().to_owned())
        };
        assert_eq!(value("x-ledig-token").as_deref(), Some("tok"));
        assert_eq!(value("authorization").as_deref(), Some("Basic b3BzOnB3"));
    }

    #[test]
    fn standard_ids_with_dots_are_replaced() {
        assert_eq!(webhook_id(Some("evt_1")), "evt_1");
        assert!(webhook_id(Some("a.b")).starts_with("msg_"));
        assert!(webhook_id(None).starts_with("msg_"));
    }

    #[test]
    fn answers_with_control_characters_are_escaped() {
        assert_eq!(printable(br#"{"ok":true}"#), r#"{"ok":true}"#);
        assert!(!printable(b"a\nb").contains('\n'));
    }
}
