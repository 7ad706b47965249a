//! The ordering key of a delivery to a destination with `ordering = "subject"`, read from the
//! event as it is delivered: its `subject`, the provider's time (the envelope's `time`: Ledger's
//! `createdAt`) and, to break ties of that, `data.updatedAt` where the payload has one. The
//! store orders a subject's deliveries by these, then by arrival (docs/ordering.md).
//!
//! Ingest reads the same key from the event as it arrives ([`order_of`]), so that an event
//! stored but not routed yet can hold its subject's later deliveries (docs/ordering.md).
//!
//! It never fails: a time it cannot read counts as absent (arrival order decides), and an
//! event without a subject is delivered on its own.

use crate::plugins::PluginEvent;
use crate::store::DeliveryOrder;
use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Deserialize)]
struct Updated<'a> {
    #[serde(borrow, default, rename = "updatedAt")]
    updated_at: Option<&'a RawValue>,
}

/// `None` when the event has no subject.
pub(super) fn delivery_order(event: &PluginEvent) -> Option<DeliveryOrder> {
    order_of(event.subject.as_deref(), event.time.as_deref(), &event.data)
}

/// The key of an event with this `subject`, `time` and `data`; `None` (and no parsing at all)
/// when the subject is absent or empty.
pub(crate) fn order_of(
    subject: Option<&str>,
    time: Option<&str>,
    data: &RawValue,
) -> Option<DeliveryOrder> {
    let subject = subject.filter(|s| !s.is_empty())?.to_owned();
    let provider_ms = time.and_then(rfc3339_ms).unwrap_or(0);
    let provider_next_ms = serde_json::from_str::<Updated<'_>>(data.get())
        .ok()
        .and_then(|u| u.updated_at)
        .and_then(time_ms)
        .unwrap_or(0);
    Some(DeliveryOrder {
        subject,
        provider_ms,
        provider_next_ms,
    })
}

fn rfc3339_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A JSON time as the providers send them: unix ms or seconds (told apart by size, as the
/// provider stage does), or RFC 3339 text.
fn time_ms(raw: &RawValue) -> Option<i64> {
    let text = raw.get().trim().trim_matches('"');
    if let Ok(n) = text.parse::<i64>() {
        return Some(if n.abs() >= 100_000_000_000 {
            n
        } else {
            n.saturating_mul(1000)
        });
    }
    rfc3339_ms(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(subject: Option<&str>, time: Option<&str>, data: &str) -> PluginEvent {
        PluginEvent {
            id: "e".into(),
            source: "ledger".into(),
            event_type: "t".into(),
            provider: "ledger".into(),
            subject: subject.map(str::to_owned),
            time: time.map(str::to_owned),
            data: RawValue::from_string(data.to_owned()).expect("json"),
            extensions: Vec::new(),
        }
    }

    #[test]
    fn the_key_is_subject_provider_time_and_updated_at() {
        let order = delivery_order(&event(
            Some("txn_1"),
            Some("2024-03-09T16:00:00Z"),
            r#"{"id":"txn_1","updatedAt":1710000100000}"#,
        ));
        assert_eq!(
            order,
            Some(DeliveryOrder {
                subject: "txn_1".into(),
                provider_ms: 1_710_000_000_000,
                provider_next_ms: 1_710_000_100_000,
            })
        );
        let seconds = delivery_order(&event(Some("s"), None, r#"{"updatedAt":"1710000100"}"#));
        assert_eq!(
            seconds.map(|o| (o.provider_ms, o.provider_next_ms)),
            Some((0, 1_710_000_100_000))
        );
        let text = delivery_order(&event(
            Some("s"),
            Some("not a time"),
            r#"{"updatedAt":"2024-03-09T16:01:40.5Z"}"#,
        ));
        assert_eq!(
            text.map(|o| (o.provider_ms, o.provider_next_ms)),
            Some((0, 1_710_000_100_500))
        );
    }

    #[test]
    fn no_subject_means_no_ordering() {
        assert_eq!(
            delivery_order(&event(None, Some("2024-03-09T16:00:00Z"), "{}")),
            None
        );
        assert_eq!(delivery_order(&event(Some(""), None, "[1]")), None);
    }
}
