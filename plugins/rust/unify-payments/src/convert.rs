//! The conversion from a provider's deposit event to `payment.received`, without host calls.
//!
//! Which events are deposits:
//! - Ledig (`provider` "ledig"): provider types `crypto_received` (on-chain funds arrived on one
//!   of the merchant's wallets) and `virtual_account_credited` (a bank transfer landed in a
//!   virtual account). Other Ledig events (payout updates, settlement accounts, admin funding)
//!   are not payments received from a payer and pass unchanged.
//! - Ledger (`provider` "ledger"): `transaction.created|updated|completed` whose transaction
//!   `type` contains "deposit" (e.g. "crypto_deposit": crypto deposited to a wallet; a future
//!   "fiat_deposit"/"deposit" counts too). Transfers, payouts, conversions and transactions
//!   without a `type` are money moving out or unknown: they pass unchanged. Every status change
//!   of a deposit is converted (the status field tells pending from completed), so the id of
//!   the new event is derived from the original event id, which differs per status change.
//!
//! Fields (keys matched ignoring case, spaces, `_`, `-`; first match in this order wins):
//! - amount: Ledig `amount`; Ledger `amount` (in `sourceCurrency`), else `finalAmount` (in
//!   `destinationCurrency`). A JSON string or number, kept as its exact decimal text.
//! - currency: Ledig `currency`, `coin`, `asset`; Ledger `sourceCurrency`, `currency`,
//!   `destinationCurrency` for `amount` (and `destinationCurrency` first for `finalAmount`).
//!   Upper-cased.
//! - provider_reference: `tx_hash`, `transaction_hash`, `txn_id`, `transaction_id`,
//!   `reference`, `id`; else the event's subject, else the event id.
//! - status: `status`, normalized by [`normalize_status`].

use payload_kit::key;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::webhook_gateway::plugin::types::Event;

/// The type of the events this plugin emits.
pub(crate) const PAYMENT_RECEIVED: &str = "payment.received";

const REFERENCE_KEYS: &[&str] = &[
    "tx_hash",
    "transaction_hash",
    "txn_id",
    "transaction_id",
    "reference",
    "id",
];

/// What to do with one event.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Not a deposit: pass it on as it is (the string says why, for the debug log).
    Unchanged(String),
    /// A deposit: emit this event instead. `notes` are things worth a warning in the log.
    Payment { event: Event, notes: Vec<String> },
}

/// The `data` of a `payment.received` event, in this field order.
#[derive(Debug, Serialize)]
struct Payment<'a> {
    amount: String,
    currency: String,
    provider: &'a str,
    provider_reference: String,
    status: &'static str,
    original_type: &'a str,
}

/// Where a deposit's fields are.
#[derive(Debug)]
struct Layout {
    provider: &'static str,
    /// (amount keys, currency keys) in order of preference.
    amounts: &'static [(&'static [&'static str], &'static [&'static str])],
}

const LEDIG: Layout = Layout {
    provider: "ledig",
    amounts: &[(&["amount"], &["currency", "coin", "asset"])],
};

const LEDGER: Layout = Layout {
    provider: "ledger",
    amounts: &[
        (
            &["amount"],
            &["sourceCurrency", "currency", "destinationCurrency"],
        ),
        (
            &["finalAmount"],
            &["destinationCurrency", "currency", "sourceCurrency"],
        ),
    ],
};

/// Decides what to do with `event`: an error is a fatal failure with that reason.
pub(crate) fn unify(event: &Event) -> Result<Outcome, String> {
    let provider = provider_of(event);
    let provider_type = provider_type_of(event, &provider);
    let kind = key::normalize(&provider_type);
    let layout = match provider.as_str() {
        "ledig" if kind == "cryptoreceived" || kind == "virtualaccountcredited" => &LEDIG,
        "ledger" if provider_type.starts_with("transaction.") => &LEDGER,
        _ => return Ok(Outcome::Unchanged("not a deposit event".to_string())),
    };
    let data = parse_object(event)?;
    if layout.provider == "ledger" {
        match key::find_str(&data, &["type"]) {
            Some(t) if key::normalize(t).contains("deposit") => {}
            Some(t) => {
                return Ok(Outcome::Unchanged(format!(
                    "ledger transaction of type {t:?} is not a deposit"
                )));
            }
            None => {
                return Ok(Outcome::Unchanged(
                    "ledger transaction without a type".to_string(),
                ));
            }
        }
    }
    payment(event, &data, layout)
}

fn payment(event: &Event, data: &Map<String, Value>, layout: &Layout) -> Result<Outcome, String> {
    let reference = key::find_str(data, REFERENCE_KEYS)
        .map(str::to_string)
        .or_else(|| event.subject.clone())
        .unwrap_or_else(|| event.id.clone());
    let what = format!("deposit {} ({reference})", event.type_);
    let mut notes = Vec::new();

    let (amount_key, amount_value, currency_keys) = layout
        .amounts
        .iter()
        .find_map(|(amount_keys, currency_keys)| {
            key::find(data, amount_keys).map(|(k, v)| (k, v, *currency_keys))
        })
        .ok_or_else(|| {
            let keys: Vec<&str> = layout
                .amounts
                .iter()
                .flat_map(|(a, _)| a.iter().copied())
                .collect();
            format!("{what} has no amount (looked for {})", keys.join(", "))
        })?;
    let amount = payload_kit::amount_text(amount_value)
        .map_err(|e| format!("{what}: field {amount_key:?}: {e}"))?;
    let currency = key::find_str(data, currency_keys)
        .map(str::to_uppercase)
        .ok_or_else(|| {
            format!(
                "{what} has no currency (looked for {})",
                currency_keys.join(", ")
            )
        })?;

    let raw_status = key::find_str(data, &["status"]);
    let status = match raw_status {
        Some(raw) => normalize_status(raw).unwrap_or_else(|| {
            notes.push(format!(
                "{what}: unknown status {raw:?}, reported as \"unknown\""
            ));
            "unknown"
        }),
        None => "unknown",
    };

    let payment = Payment {
        amount,
        currency,
        provider: layout.provider,
        provider_reference: reference,
        status,
        original_type: &event.type_,
    };
    let data = serde_json::to_string(&payment).map_err(|e| format!("{what}: {e}"))?;
    let event = Event {
        id: format!("{}:{PAYMENT_RECEIVED}", event.id),
        source: event.source.clone(),
        type_: PAYMENT_RECEIVED.to_string(),
        provider: event.provider.clone(),
        subject: event.subject.clone(),
        time: event.time.clone(),
        data,
        extensions: event.extensions.clone(),
    };
    Ok(Outcome::Payment { event, notes })
}

/// The provider name, lower case: the event's `provider`, else the first part of its type.
fn provider_of(event: &Event) -> String {
    let provider = event.provider.trim();
    if provider.is_empty() {
        event
            .type_
            .split('.')
            .next()
            .unwrap_or_default()
            .to_lowercase()
    } else {
        provider.to_lowercase()
    }
}

/// The provider's own type string: the event type without "<provider>.", else the
/// `providertype` extension.
fn provider_type_of(event: &Event, provider: &str) -> String {
    let prefix = format!("{provider}.");
    // `get` rather than indexing: the type is input, and may have multi-byte characters.
    let head = event.type_.get(..prefix.len());
    if let (Some(head), Some(rest)) = (head, event.type_.get(prefix.len()..))
        && head.eq_ignore_ascii_case(&prefix)
        && !rest.is_empty()
    {
        return rest.to_string();
    }
    event
        .extensions
        .iter()
        .find(|(name, _)| name == "providertype")
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| event.type_.clone())
}

fn parse_object(event: &Event) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(&event.data) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!(
            "{} {}: data is not a JSON object",
            event.type_, event.id
        )),
        Err(e) => Err(format!(
            "{} {}: data is not JSON: {e}",
            event.type_, event.id
        )),
    }
}

/// Maps the providers' status words onto `pending`, `completed`, `failed`, `returned`,
/// `refunded`; `None` for a word not known here (reported as "unknown").
pub(crate) fn normalize_status(raw: &str) -> Option<&'static str> {
    let s = key::normalize(raw);
    let status = match s.as_str() {
        "pending"
        | "processing"
        | "inprogress"
        | "created"
        | "initiated"
        | "queued"
        | "submitted"
        | "unconfirmed"
        | "confirming"
        | "awaitingfunds"
        | "awaitingconfirmation"
        | "fundsreceived"
        | "paymentsubmitted"
        | "onhold"
        | "review"
        | "inreview" => "pending",
        "completed" | "complete" | "success" | "successful" | "succeeded" | "confirmed"
        | "paid" | "settled" | "credited" | "processed" | "paymentprocessed" | "received" => {
            "completed"
        }
        "failed" | "failure" | "error" | "declined" | "rejected" | "cancelled" | "canceled"
        | "expired" | "reversed" => "failed",
        "returned" => "returned",
        "refunded" => "refunded",
        _ => return None,
    };
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(provider: &str, provider_type: &str, data: Value) -> Event {
        Event {
            id: "evt_1".into(),
            source: provider.into(),
            type_: format!("{provider}.{provider_type}"),
            provider: provider.into(),
            subject: Some("subj_1".into()),
            time: Some("2024-03-09T16:00:00Z".into()),
            data: data.to_string(),
            extensions: vec![("providertype".into(), provider_type.into())],
        }
    }

    fn emitted(outcome: Result<Outcome, String>) -> (Event, Value) {
        match outcome {
            Ok(Outcome::Payment { event, .. }) => {
                let data = serde_json::from_str(&event.data).expect("data is JSON");
                (event, data)
            }
            other => panic!("expected a payment, got {other:?}"),
        }
    }

    #[test]
    fn ledig_crypto_received() {
        let e = event(
            "ledig",
            "crypto_received",
            json!({"id": "dep_8812", "tx_hash": "0x5be1d9", "coin": "usdt",
                   "Amount": "150.25", "status": "completed", "fee": "0.50"}),
        );
        let (out, data) = emitted(unify(&e));
        assert_eq!(out.id, "evt_1:payment.received");
        assert_eq!(out.type_, "payment.received");
        assert_eq!(out.subject.as_deref(), Some("subj_1"));
        assert_eq!(out.source, "ledig");
        assert_eq!(out.extensions, e.extensions);
        assert_eq!(
            data,
            json!({"amount": "150.25", "currency": "USDT", "provider": "ledig",
                   "provider_reference": "0x5be1d9", "status": "completed",
                   "original_type": "ledig.crypto_received"})
        );
        // Field order is part of the documented shape.
        assert!(
            out.data
                .starts_with(r#"{"amount":"150.25","currency":"USDT","provider":"ledig""#)
        );
    }

    #[test]
    fn ledig_virtual_account_credited_odd_spelling() {
        let e = event(
            "ledig",
            "virtual_account_credited",
            json!({"ID": "vac_odd_1", "Currency": "NGN", "AMOUNT": "75.00", "Status": "successful"}),
        );
        let (_, data) = emitted(unify(&e));
        assert_eq!(data["amount"], "75.00");
        assert_eq!(data["currency"], "NGN");
        assert_eq!(data["provider_reference"], "vac_odd_1");
        assert_eq!(data["status"], "completed");
    }

    #[test]
    fn numbers_keep_their_text() {
        let mut e = event("ledig", "crypto_received", json!({}));
        e.data = r#"{"id":"d","coin":"BTC","amount":10.50,"status":"pending"}"#.into();
        let (_, data) = emitted(unify(&e));
        assert_eq!(data["amount"], "10.50");
        assert_eq!(data["status"], "pending");
        e.data = r#"{"id":"d","coin":"BTC","amount":0.000000000000000000123456789}"#.into();
        let (_, data) = emitted(unify(&e));
        assert_eq!(data["amount"], "0.000000000000000000123456789");
        assert_eq!(data["status"], "unknown");
    }

    #[test]
    fn ledger_crypto_deposit() {
        let e = event(
            "ledger",
            "transaction.created",
            json!({"id": "txn_deposit_51", "type": "crypto_deposit", "status": "funds_received",
                   "amount": "250.00", "sourceCurrency": "usdt", "destinationCurrency": "usdt",
                   "txHash": "0x9f1c2b7a"}),
        );
        let (_, data) = emitted(unify(&e));
        assert_eq!(
            data,
            json!({"amount": "250.00", "currency": "USDT", "provider": "ledger",
                   "provider_reference": "0x9f1c2b7a", "status": "pending",
                   "original_type": "ledger.transaction.created"})
        );
    }

    #[test]
    fn ledger_final_amount_fallback() {
        let e = event(
            "ledger",
            "transaction.completed",
            json!({"id": "txn_2", "type": "deposit", "status": "completed",
                   "finalAmount": "3.38", "sourceCurrency": "usdc", "destinationCurrency": "gbp"}),
        );
        let (_, data) = emitted(unify(&e));
        assert_eq!(data["amount"], "3.38");
        assert_eq!(data["currency"], "GBP");
        assert_eq!(data["provider_reference"], "txn_2");
        assert_eq!(data["status"], "completed");
    }

    #[test]
    fn not_deposits_pass_unchanged() {
        let transfer = event(
            "ledger",
            "transaction.completed",
            json!({"id": "txn_7d2e01", "type": "transfer", "amount": "5.0"}),
        );
        let untyped = event("ledger", "transaction.updated", json!({"id": "t"}));
        let payout = event(
            "ledig",
            "crypto_payout_update",
            json!({"Amount sent": "99.00"}),
        );
        let wallet = event("ledger", "wallet.created", json!({"id": "wal_1"}));
        let not_json = Event {
            data: "not json".into(),
            ..event("ledger", "customer.created", json!({}))
        };
        // A type with a multi-byte character where the "<provider>." prefix would end.
        let multibyte = Event {
            type_: "lé.x".into(),
            provider: "l".into(),
            ..event("ledger", "x", json!({}))
        };
        for e in [transfer, untyped, payout, wallet, not_json, multibyte] {
            assert!(
                matches!(unify(&e), Ok(Outcome::Unchanged(_))),
                "{}",
                e.type_
            );
        }
    }

    #[test]
    fn missing_or_bad_fields_are_fatal() {
        let no_amount = event(
            "ledig",
            "crypto_received",
            json!({"id": "dep_1", "coin": "USDT"}),
        );
        let err = unify(&no_amount).expect_err("fatal");
        assert!(err.contains("has no amount"), "{err}");
        assert!(err.contains("dep_1"), "{err}");
        let no_currency = event(
            "ledig",
            "crypto_received",
            json!({"id": "dep_1", "Amount": "1"}),
        );
        let err = unify(&no_currency).expect_err("fatal");
        assert!(err.contains("has no currency"), "{err}");
        let bad_amount = event(
            "ledig",
            "crypto_received",
            json!({"id": "d", "Amount": "ten", "coin": "X"}),
        );
        let err = unify(&bad_amount).expect_err("fatal");
        assert!(err.contains("not a decimal"), "{err}");
        let array = event("ledig", "crypto_received", json!([1, 2]));
        assert!(
            unify(&array)
                .expect_err("fatal")
                .contains("not a JSON object")
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(normalize_status("payment_processed"), Some("completed"));
        assert_eq!(normalize_status("Funds Received"), Some("pending"));
        assert_eq!(normalize_status("FAILED"), Some("failed"));
        assert_eq!(normalize_status("refunded"), Some("refunded"));
        assert_eq!(normalize_status("weird"), None);
    }
}
