//! One delivery on a source's path, start to answer: limits (content coding, size) -> what the
//! headers alone can refuse (authentication that needs no body, the bodies' memory budget) ->
//! the body read (size, time, budget) -> authenticate -> normalize -> dedup + persist -> ack.
//! Each step's failure maps to exactly one status of the design's table. Nothing that can be
//! refused from the headers costs a byte of body memory.
//!
//! The ack waits for the store's commit. This path does no plugin work and no outbound I/O.

use super::body::{self, BodyError};
use super::client_addr::client_addr;
use super::reply::{self, Body};
use super::{Endpoint, Gateway};
use crate::envelope::RetryIdentity;
use crate::metrics::Outcome;
use crate::metrics::events::{
    AuthRejected, BodyBufferFull, BodyQuarantined, EncodingRefused, EventStored, RequestHandled,
    StoreUnavailable, UnknownFieldsSeen,
};
use crate::providers::{AuthError, Delivery, NormalizeError, RequestHead};
use crate::store::{
    DataSpan, IngestOutcome, NewEvent, ObjectStateClaim, QuarantinedBody, StoreError,
};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use std::net::IpAddr;
use tokio::time::Instant;

const STORE_UNAVAILABLE: &str = "store unavailable, retry later";
/// `Retry-After` of a 503 for a full body buffer: held bodies leave as their requests finish
/// (milliseconds) or time out (`request_timeout`).
const BUSY_RETRY_AFTER_SECS: u32 = 5;

/// The request limits of the config generation the request started under.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits<'a> {
    pub(super) max_body: u64,
    pub(super) request_timeout: std::time::Duration,
    pub(super) trusted_proxies: &'a crate::config::TrustedProxies,
}

pub(super) async fn receive(
    gw: &Gateway,
    endpoint: &Endpoint,
    limits: Limits<'_>,
    req: Request<Incoming>,
    peer: IpAddr,
    path_suffix: Option<&str>,
) -> Response<Body> {
    let started = Instant::now();
    // Who to name if it is refused (behind trusted proxies, the client they forwarded).
    let client = client_addr(peer, req.headers(), limits.trusted_proxies).unwrap_or(peer);
    let (outcome, response) = handle(gw, endpoint, limits, req, peer, path_suffix, started).await;
    // Refusals are kept for the console; an unauthorized one with its reason, by
    // `unauthorized` (the reason is what the client was told, never a secret).
    if !matches!(
        outcome,
        Outcome::Accepted | Outcome::Duplicate | Outcome::Unauthorized
    ) {
        gw.admin_state
            .record_rejection(endpoint.source.name(), client, outcome.as_str());
    }
    RequestHandled {
        metrics: &endpoint.metrics,
        outcome,
        elapsed: started.elapsed(),
    }
    .emit();
    response
}

async fn handle(
    gw: &Gateway,
    endpoint: &Endpoint,
    limits: Limits<'_>,
    req: Request<Incoming>,
    peer: IpAddr,
    path_suffix: Option<&str>,
    started: Instant,
) -> (Outcome, Response<Body>) {
    let (parts, incoming) = req.into_parts();
    // From here on `peer` is the client, as far as trusted proxies say (`client_addr`).
    let peer = match client_addr(peer, &parts.headers, limits.trusted_proxies) {
        Ok(client) => client,
        Err(e) => {
            let res = reply::error_and_close(StatusCode::BAD_REQUEST, &e.to_string());
            return (Outcome::Malformed, res);
        }
    };
    // A compressed body is refused from the headers alone: never inflated, never read, never
    // authenticated (see `body::check_encoding` for why).
    if let Err(e) = body::check_encoding(&parts.headers) {
        EncodingRefused {
            metrics: &endpoint.metrics,
            encoding: &e.codings,
            peer,
        }
        .emit();
        let res = reply::error_and_close(StatusCode::UNSUPPORTED_MEDIA_TYPE, &e.to_string());
        return (Outcome::UnsupportedEncoding, res);
    }
    // Refuse a declared oversize body before reading a byte of it.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body) {
        let msg = BodyError::TooLarge(limits.max_body).to_string();
        return (
            Outcome::TooLarge,
            reply::error_and_close(StatusCode::PAYLOAD_TOO_LARGE, &msg),
        );
    }
    // What cannot authenticate whatever its body is refused before a byte of it is read.
    let head = RequestHead {
        headers: &parts.headers,
        peer,
        path_suffix,
    };
    if let Err(reason) = endpoint.source.check_headers(head, unix_now()) {
        return unauthorized(gw, endpoint, &reason, peer, true);
    }
    // A declared body that does not fit the bodies' budget now is refused unread, rather
    // than read in part and then refused.
    if declared.is_some_and(|len| !gw.bodies.would_fit(len)) {
        return overloaded(gw, endpoint, peer, gw.bodies.limit());
    }
    let deadline = started + limits.request_timeout;
    // Held until the answer: the body stays in memory through the store's commit.
    let mut lease = gw.bodies.lease();
    let raw = match body::read_limited(incoming, limits.max_body, deadline, &mut lease).await {
        Ok(raw) => raw,
        Err(e @ BodyError::TooLarge(_)) => {
            let res = reply::error_and_close(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string());
            return (Outcome::TooLarge, res);
        }
        Err(e @ BodyError::Timeout) => {
            let res = reply::error_and_close(StatusCode::REQUEST_TIMEOUT, &e.to_string());
            return (Outcome::Timeout, res);
        }
        Err(e @ BodyError::Read(_)) => {
            let res = reply::error_and_close(StatusCode::BAD_REQUEST, &e.to_string());
            return (Outcome::Malformed, res);
        }
        Err(BodyError::Overloaded(limit)) => return overloaded(gw, endpoint, peer, limit),
    };

    let delivery = Delivery {
        headers: &parts.headers,
        body: &raw,
        peer,
        path_suffix,
    };
    let verified = match endpoint.source.authenticate(delivery, unix_now()) {
        Ok(v) => v,
        Err(reason) => return unauthorized(gw, endpoint, &reason, peer, false),
    };

    let received_at_ms = unix_now_ms();
    let headers = endpoint.source.kept_headers(&parts.headers);
    let normalized = match endpoint.source.normalize(&verified, received_at_ms) {
        Ok(n) => n,
        Err(NormalizeError::NotJson(detail)) => {
            let quarantined = QuarantinedBody {
                source: endpoint.source.name().to_owned(),
                reason: format!("body is not valid JSON: {detail}"),
                raw_body: raw.clone(),
                headers,
                received_at_ms,
            };
            return quarantine(gw, endpoint, quarantined).await;
        }
    };
    UnknownFieldsSeen {
        metrics: &endpoint.metrics,
        event_type: &normalized.envelope.event_type,
        fields: &normalized.unknown_fields,
    }
    .emit();

    let envelope = normalized.envelope.to_json_parts();
    let data_span = envelope
        .data
        .zip(normalized.data_in_body)
        .map(|(data, in_body)| DataSpan {
            in_envelope: data.start,
            in_body,
            len: data.len(),
        });
    let order = if endpoint.may_be_ordered(&normalized.envelope.event_type) {
        crate::worker::order_key::order_of(
            normalized.envelope.subject.as_deref(),
            normalized.envelope.time.as_deref(),
            &normalized.envelope.data,
        )
    } else {
        None
    };
    let event = NewEvent {
        order,
        subject: normalized
            .envelope
            .subject
            .clone()
            .filter(|s| !s.is_empty()),
        source: endpoint.source.name().to_owned(),
        dedup_key: normalized.dedup_key.as_str().to_owned(),
        event_type: normalized.envelope.event_type.clone(),
        envelope: envelope.text,
        data_span,
        raw_body: raw,
        headers,
        received_at_ms,
        object_state: match normalized.retry_identity {
            RetryIdentity::Key => None,
            RetryIdentity::ObjectState(s) => Some(ObjectStateClaim {
                object: s.object,
                state: s.state,
                retry_window_ms: i64::try_from(s.retry_window.as_millis()).unwrap_or(i64::MAX),
            }),
        },
    };
    match store_call(gw, gw.store.ingest(event)).await {
        Ok(IngestOutcome::Stored { seq }) => {
            EventStored {
                metrics: &endpoint.metrics,
                catalogue_type: normalized.catalogue_type,
                event_type: &normalized.envelope.event_type,
                id: &normalized.envelope.id,
                seq,
            }
            .emit();
            (Outcome::Accepted, reply::accepted())
        }
        Ok(IngestOutcome::Duplicate) => (Outcome::Duplicate, reply::duplicate()),
        Err(error) => {
            StoreUnavailable {
                source: endpoint.source.name(),
                error: &error,
            }
            .emit();
            let res = reply::error(StatusCode::SERVICE_UNAVAILABLE, STORE_UNAVAILABLE);
            (Outcome::Error, res)
        }
    }
}

/// 401 with the reason. `unread`: the body was not read, so the connection cannot carry
/// another request and is closed after the answer.
fn unauthorized(
    gw: &Gateway,
    endpoint: &Endpoint,
    reason: &AuthError,
    peer: IpAddr,
    unread: bool,
) -> (Outcome, Response<Body>) {
    AuthRejected {
        metrics: &endpoint.metrics,
        reason,
        peer,
    }
    .emit();
    let message = reason.to_string();
    gw.admin_state
        .record_rejection(endpoint.source.name(), peer, &message);
    let res = if unread {
        reply::error_and_close(StatusCode::UNAUTHORIZED, &message)
    } else {
        reply::error(StatusCode::UNAUTHORIZED, &message)
    };
    (Outcome::Unauthorized, res)
}

/// 503 with `Retry-After`, and the connection closed (its body was not read to the end): the
/// request bodies in memory are at `server.max_body_buffer`. Never a 200 for a body not read,
/// never a wait for room: the provider retries.
fn overloaded(
    gw: &Gateway,
    endpoint: &Endpoint,
    peer: IpAddr,
    limit: u64,
) -> (Outcome, Response<Body>) {
    BodyBufferFull {
        metrics: &gw.metrics,
        source: endpoint.source.name(),
        peer,
        limit,
    }
    .emit();
    let message = BodyError::Overloaded(limit).to_string();
    let res = reply::retry_later(
        StatusCode::SERVICE_UNAVAILABLE,
        &message,
        BUSY_RETRY_AFTER_SECS,
    );
    (Outcome::Overloaded, res)
}

/// Keeps an authenticated body that is not JSON, then answers 400; if even that write fails,
/// 503 so the provider retries and the body is still not lost.
async fn quarantine(
    gw: &Gateway,
    endpoint: &Endpoint,
    body: QuarantinedBody,
) -> (Outcome, Response<Body>) {
    let reason = body.reason.clone();
    match store_call(gw, gw.store.quarantine(body)).await {
        Ok(()) => {
            BodyQuarantined {
                metrics: &endpoint.metrics,
                reason: &reason,
            }
            .emit();
            (
                Outcome::Malformed,
                reply::error(StatusCode::BAD_REQUEST, "body is not valid JSON"),
            )
        }
        Err(error) => {
            StoreUnavailable {
                source: endpoint.source.name(),
                error: &error,
            }
            .emit();
            let res = reply::error(StatusCode::SERVICE_UNAVAILABLE, STORE_UNAVAILABLE);
            (Outcome::Error, res)
        }
    }
}

/// A store call bounded in time: a stuck disk becomes a 503 (the provider retries), not a hang.
async fn store_call<T>(
    gw: &Gateway,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(gw.store_timeout, call)
        .await
        .unwrap_or_else(|_| Err(StoreError::Write("timed out waiting for the store".into())))
}

fn unix_now() -> i64 {
    unix_now_ms() / 1000
}

fn unix_now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
