//! Reading a request body with a size cap and a deadline, so neither a huge body nor a client
//! trickling bytes can hold memory or a connection beyond the configured limits.

use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("body exceeds {0} bytes")]
    TooLarge(u64),
    #[error("request body not received in time")]
    Timeout,
    #[error("could not read request body: {0}")]
    Read(String),
}

/// Reads the whole body, refusing it as soon as it passes `max` bytes (whatever the client
/// declared) or when `deadline` passes.
pub(crate) async fn read_limited(
    body: Incoming,
    max: u64,
    deadline: Instant,
) -> Result<Bytes, BodyError> {
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout_at(deadline, collect).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(BodyError::TooLarge(max))
        }
        Ok(Err(e)) => Err(BodyError::Read(e.to_string())),
    }
}
