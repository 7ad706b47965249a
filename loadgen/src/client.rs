//! One keep-alive HTTP/1 connection (hyper's low-level `client::conn::http1`, no pool) that
//! sends deliveries to `POST /webhooks/ledger` one at a time and classifies the answers.

use crate::signing::{Delivery, EVENT_TYPE};
use anyhow::Context as _;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

const PATH: &str = "/webhooks/ledger";
const EVENT_ID: HeaderName = HeaderName::from_static("x-ledger-event-id");
const EVENT_TYPE_HEADER: HeaderName = HeaderName::from_static("x-ledger-event-type");
const SIGNATURE: HeaderName = HeaderName::from_static("x-ledger-signature");

/// What a server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 200, a new event.
    Accepted,
    /// 200 with `"duplicate":true`.
    Duplicate,
    /// Any other status, with the start of the body.
    Other(u16, String),
}

#[derive(Debug)]
pub(crate) struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    uri: Uri,
}

impl Connection {
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        // Drives the socket; ends when `sender` is dropped or the server closes.
        tokio::spawn(conn);
        Ok(Self {
            sender,
            host: HeaderValue::from_str(&addr.to_string())?,
            uri: Uri::from_static(PATH),
        })
    }

    pub(crate) async fn send(&mut self, d: &Delivery) -> anyhow::Result<Answer> {
        let mut req = Request::new(Full::new(d.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.reserve(5);
        h.insert(HOST, self.host.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(EVENT_ID, d.id.clone());
        h.insert(EVENT_TYPE_HEADER, HeaderValue::from_static(EVENT_TYPE));
        h.insert(SIGNATURE, d.signature.clone());
        self.sender.ready().await.context("connection closed")?;
        let res = self.sender.send_request(req).await?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok(match status {
            200 if body.windows(16).any(|w| w == br#""duplicate":true"#) => Answer::Duplicate,
            200 => Answer::Accepted,
            other => Answer::Other(
                other,
                String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            ),
        })
    }
}
