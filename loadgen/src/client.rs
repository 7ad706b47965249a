//! One keep-alive HTTP/1 connection that sends deliveries and classifies the answers.

use crate::signer::Delivery;
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// What a server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Accepted,
    Duplicate,
    Status(u16),
}

#[derive(Debug)]
pub(crate) struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self { sender })
    }

    pub(crate) async fn send(&mut self, d: &Delivery) -> anyhow::Result<Answer> {
        self.sender.ready().await?;
        let req = http::Request::post("/webhooks/ledger")
            .header(http::header::HOST, "bench")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-ledger-event-id", d.id.clone())
            .header("x-ledger-event-type", "transaction.completed")
            .header("x-ledger-signature", d.signature.clone())
            .body(Full::new(d.body.clone()))?;
        let res = self.sender.send_request(req).await?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok(match status {
            200 if body.windows(9).any(|w| w == b"duplicate") => Answer::Duplicate,
            200 => Answer::Accepted,
            other => Answer::Status(other),
        })
    }
}
