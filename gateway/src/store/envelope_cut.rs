//! How an event's envelope is kept in its row. The envelope's `data` is usually the webhook's
//! payload copied verbatim from the raw body, which the row keeps anyway (for signature
//! re-checks); storing it twice made each event a quarter larger, and a commit's time is mostly
//! the bytes it writes. So each backend stores the envelope without it plus where to find it
//! (`data_at`, `data_from`, `data_len`), and every read puts it back (SQLite: the
//! `stored_events` view). This module must never let a row lose its payload: whatever does not
//! check out is stored whole.

use super::NewEvent;
use std::borrow::Cow;

/// The envelope as the row keeps it: without its `data` when that is a part of the raw body,
/// with the checked span to put it back (`data_at`, `data_from`, `data_len`). A span that does
/// not fit the texts (never expected) stores the envelope whole.
pub(super) fn stored_envelope(e: &NewEvent) -> (Cow<'_, str>, Option<SpanColumns>) {
    match cut_payload(e) {
        Some((text, span)) => (Cow::Owned(text), Some(span)),
        None => (Cow::Borrowed(e.envelope.as_str()), None),
    }
}

/// The `data_at`, `data_from` and `data_len` columns of a row whose envelope was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SpanColumns {
    pub(super) at: i64,
    pub(super) from: i64,
    pub(super) len: i64,
}

fn cut_payload(e: &NewEvent) -> Option<(String, SpanColumns)> {
    let span = e.data_span?;
    let end = span.in_envelope.checked_add(span.len)?;
    let value = e.envelope.as_bytes().get(span.in_envelope..end)?;
    let in_body = e
        .raw_body
        .get(span.in_body..span.in_body.checked_add(span.len)?)?;
    if value != in_body {
        return None;
    }
    let (head, tail) = (e.envelope.get(..span.in_envelope)?, e.envelope.get(end..)?);
    let columns = SpanColumns {
        at: i64::try_from(span.in_envelope).ok()?,
        from: i64::try_from(span.in_body).ok()?,
        len: i64::try_from(span.len).ok()?,
    };
    Some(([head, tail].concat(), columns))
}
