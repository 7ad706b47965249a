//! The admin API's views of stored rows, built the same way on every backend: which columns
//! a listing, an event's detail and a dead letter read, and how the row becomes the value the
//! API serializes (JSON text that does not parse is shown as a string, a quarantined body as
//! text when it is UTF-8 and always as base64). A backend only says how to read one column of
//! its row ([`ViewRow`]). This module never runs a query.

use super::work::{
    AttemptRecord, DeliveryView, EventDetail, EventSummary, PluginStep, QuarantineEntry,
    RouteRunView,
};
use base64::Engine as _;

/// One result row of a backend, read by column index.
pub(super) trait ViewRow {
    type Error;
    fn int(&self, idx: usize) -> Result<i64, Self::Error>;
    fn opt_int(&self, idx: usize) -> Result<Option<i64>, Self::Error>;
    fn text(&self, idx: usize) -> Result<String, Self::Error>;
    fn opt_text(&self, idx: usize) -> Result<Option<String>, Self::Error>;
    fn bytes(&self, idx: usize) -> Result<Vec<u8>, Self::Error>;
}

/// An event listing's columns, from `event_states`, in [`summary`]'s order (the envelope only
/// for the amount and currency the summary shows).
pub(super) const SUMMARY_COLUMNS: &str =
    "seq, dedup_key, source, event_type, status, received_at, envelope";

/// An event's detail, from `event_states`: the summary's columns (the envelope last), then
/// its headers and plugin steps ([`event_detail`]'s order).
pub(super) const DETAIL_COLUMNS: &str =
    "seq, dedup_key, source, event_type, status, received_at, envelope, headers, plugin_results";

pub(super) const DELIVERY_COLUMNS: &str = "id, event_seq, route, destination, webhook_id, status, \
     attempts, next_attempt_at, last_error, history, created_at, updated_at";

pub(super) const ROUTE_RUN_COLUMNS: &str =
    "id, event_seq, route, status, attempts, next_attempt_at, reason, created_at, updated_at";

/// (`last_seen_at` is NULL in SQLite rows written before it existed.)
pub(super) const QUARANTINE_COLUMNS: &str = "id, source, reason, received_at, headers, raw_body, \
     repeats, coalesce(last_seen_at, received_at)";

/// An attempt count as the views show it (the columns are never negative).
fn count<E>(r: &impl ViewRow<Error = E>, idx: usize) -> Result<u32, E> {
    Ok(u32::try_from(r.int(idx)?.max(0)).unwrap_or(u32::MAX))
}

pub(super) fn summary<E>(r: &impl ViewRow<Error = E>) -> Result<EventSummary, E> {
    let envelope = serde_json::from_str::<serde_json::Value>(&r.text(6)?).unwrap_or_default();
    let (amount, currency) = money(&envelope);
    Ok(EventSummary {
        seq: r.int(0)?,
        id: r.text(1)?,
        source: r.text(2)?,
        event_type: r.text(3)?,
        status: r.text(4)?,
        received_at: r.int(5)?,
        amount,
        currency,
    })
}

/// Keys that hold an event's amount, then its currency, in the providers' payloads (Ledger
/// `amount`/`finalAmount` with `sourceCurrency`/`destinationCurrency`, Ledig `Amount` with
/// `coin`, the example plugin's `amount`/`currency`), compared ignoring case, `_` and `-`.
const AMOUNT_KEYS: [&str; 2] = ["amount", "finalamount"];
const CURRENCY_KEYS: [&str; 5] = [
    "currency",
    "sourcecurrency",
    "coin",
    "asset",
    "destinationcurrency",
];

/// The amount (exact decimal text) and currency (upper case) of an envelope's `data`, when its
/// payload has an amount; shown by the console, never used to decide anything.
pub(super) fn money(envelope: &serde_json::Value) -> (Option<String>, Option<String>) {
    let Some(data) = envelope.get("data").and_then(serde_json::Value::as_object) else {
        return (None, None);
    };
    let find = |keys: &[&str]| {
        keys.iter().find_map(|want| {
            data.iter().find_map(|(k, v)| {
                let norm: String = k
                    .chars()
                    .filter(|c| *c != '_' && *c != '-')
                    .flat_map(char::to_lowercase)
                    .collect();
                if norm != *want {
                    return None;
                }
                match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }
            })
        })
    };
    let Some(amount) = find(&AMOUNT_KEYS) else {
        return (None, None);
    };
    // Shown in a table cell: cut so a hostile payload cannot fill the page.
    let cut = |s: String| s.chars().take(64).collect::<String>();
    (
        Some(cut(amount)),
        find(&CURRENCY_KEYS).map(|c| cut(c.to_uppercase())),
    )
}

/// The event of a [`DETAIL_COLUMNS`] row, with its deliveries and route runs.
pub(super) fn event_detail<E>(
    r: &impl ViewRow<Error = E>,
    deliveries: Vec<DeliveryView>,
    route_runs: Vec<RouteRunView>,
) -> Result<EventDetail, E> {
    Ok(EventDetail {
        summary: summary(r)?,
        envelope: json_or_text(&r.text(6)?),
        headers: json_or_text(&r.text(7)?),
        plugin_results: r
            .opt_text(8)?
            .and_then(|s| serde_json::from_str::<Vec<PluginStep>>(&s).ok())
            .unwrap_or_default(),
        deliveries,
        route_runs,
    })
}

pub(super) fn delivery_view<E>(r: &impl ViewRow<Error = E>) -> Result<DeliveryView, E> {
    Ok(DeliveryView {
        id: r.int(0)?,
        event_seq: r.int(1)?,
        route: r.text(2)?,
        destination: r.text(3)?,
        webhook_id: r.text(4)?,
        status: r.text(5)?,
        attempts: count(r, 6)?,
        next_attempt_at: r.opt_int(7)?,
        last_error: r.opt_text(8)?,
        history: serde_json::from_str::<Vec<AttemptRecord>>(&r.text(9)?).unwrap_or_default(),
        created_at: r.int(10)?,
        updated_at: r.int(11)?,
    })
}

pub(super) fn route_run_view<E>(r: &impl ViewRow<Error = E>) -> Result<RouteRunView, E> {
    Ok(RouteRunView {
        id: r.int(0)?,
        event_seq: r.int(1)?,
        route: r.text(2)?,
        status: r.text(3)?,
        attempts: count(r, 4)?,
        next_attempt_at: r.opt_int(5)?,
        reason: r.text(6)?,
        created_at: r.int(7)?,
        updated_at: r.int(8)?,
    })
}

/// A [`QUARANTINE_COLUMNS`] row as the API shows it.
pub(super) fn quarantine_entry<E>(r: &impl ViewRow<Error = E>) -> Result<QuarantineEntry, E> {
    let body = r.bytes(5)?;
    Ok(QuarantineEntry {
        id: r.int(0)?,
        source: r.text(1)?,
        reason: r.text(2)?,
        received_at: r.int(3)?,
        headers: json_or_text(&r.text(4)?),
        repeats: r.int(6)?,
        last_seen_at: r.int(7)?,
        size: body.len(),
        body_base64: base64::engine::general_purpose::STANDARD.encode(&body),
        body_text: String::from_utf8(body).ok(),
    })
}

fn json_or_text(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::money;
    use serde_json::json;

    #[test]
    fn amounts_come_from_the_providers_keys_and_only_with_an_amount() {
        let ledger = json!({"data": {"amount": "250.00", "sourceCurrency": "usdt"}});
        assert_eq!(money(&ledger), (Some("250.00".into()), Some("USDT".into())));
        let ledig = json!({"data": {"Amount": 25.5, "coin": "btc"}});
        assert_eq!(money(&ledig), (Some("25.5".into()), Some("BTC".into())));
        let wallet = json!({"data": {"balance": "9.00", "currency": "usd"}});
        assert_eq!(money(&wallet), (None, None));
        assert_eq!(money(&json!({"data": "text"})), (None, None));
    }
}
