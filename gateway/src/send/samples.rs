//! Built-in sample events for `gateway send`: one realistic body for every event type in the
//! providers' catalogues, shaped as the provider sends it (Ledger's `{id, type, createdAt,
//! data}`, Ledig's `{"event": ..., "data": {...}}` with the key spellings its docs list).
//!
//! Owns the sample texts and the ids put into them; never signs or sends. Every id of a sample
//! carries one random part (or the caller's `--id`), so two sends are two events unless asked
//! otherwise. A unit test keeps this list equal to the providers' catalogues.

use rand::Rng as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// The two providers a sample can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Provider {
    Ledger,
    Ledig,
}

impl Provider {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ledger => "ledger",
            Self::Ledig => "ledig",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "ledger" => Some(Self::Ledger),
            "ledig" => Some(Self::Ledig),
            _ => None,
        }
    }
}

/// `(type as the provider names it, data template)`. In templates `$ID` is the random part
/// (or `--id`) and `$NOW` the send time in Unix milliseconds.
const LEDGER: &[(&str, &str)] = &[
    (
        "customer.created",
        r#"{"id":"cus_$ID","type":"individual","firstName":"Ada","lastName":"Okafor","email":"ada.okafor@example.com","country":"GB","status":"pending_verification","createdAt":$NOW,"updatedAt":$NOW}"#,
    ),
    (
        "customer.updated",
        r#"{"id":"cus_$ID","type":"individual","firstName":"Ada","lastName":"Okafor","email":"ada.okafor@example.com","country":"GB","status":"verified","createdAt":1763855940000,"updatedAt":$NOW}"#,
    ),
    (
        "transaction.created",
        r#"{"id":"txn_$ID","customerId":"cus_4f1a9c","walletId":"wal_77c2e1","type":"crypto_deposit","status":"funds_received","amount":"250.00","sourceCurrency":"usdt","destinationCurrency":"usdt","finalAmount":"250.00","exchangeFee":"0.0","txHash":"0x9f1c2b7a$ID","createdAt":$NOW,"updatedAt":$NOW}"#,
    ),
    (
        "transaction.updated",
        r#"{"id":"txn_$ID","customerId":"cus_4f1a9c","walletId":"wal_77c2e1","type":"crypto_deposit","status":"processing","amount":"250.00","sourceCurrency":"usdt","destinationCurrency":"usdt","finalAmount":"250.00","exchangeFee":"0.0","txHash":"0x9f1c2b7a$ID","createdAt":1763855940000,"updatedAt":$NOW}"#,
    ),
    (
        "transaction.completed",
        r#"{"id":"txn_$ID","customerId":"cus_4f1a9c","walletId":"wal_77c2e1","type":"crypto_deposit","status":"successful","amount":"250.00","sourceCurrency":"usdt","destinationCurrency":"usdt","finalAmount":"250.00","exchangeFee":"0.0","txHash":"0x9f1c2b7a$ID","createdAt":1763855940000,"updatedAt":$NOW}"#,
    ),
    (
        "wallet.created",
        r#"{"id":"wal_$ID","customerId":"cus_4f1a9c","currency":"usdt","network":"tron","address":"TXo3sJ9kq1$ID","balance":"0.00","status":"active","createdAt":$NOW,"updatedAt":$NOW}"#,
    ),
    (
        "wallet.updated",
        r#"{"id":"wal_$ID","customerId":"cus_4f1a9c","currency":"usdt","network":"tron","address":"TXo3sJ9kq1$ID","balance":"250.00","status":"active","createdAt":1763855940000,"updatedAt":$NOW}"#,
    ),
    (
        "virtual_account.created",
        r#"{"id":"va_$ID","customerId":"cus_4f1a9c","bankName":"Providus Bank","accountNumber":"9912345678","accountName":"Acme Ltd","currency":"ngn","status":"active","createdAt":$NOW,"updatedAt":$NOW}"#,
    ),
    (
        "virtual_account.updated",
        r#"{"id":"va_$ID","customerId":"cus_4f1a9c","bankName":"Providus Bank","accountNumber":"9912345678","accountName":"Acme Ltd","currency":"ngn","status":"suspended","createdAt":1763855940000,"updatedAt":$NOW}"#,
    ),
    (
        "counterparty.created",
        r#"{"id":"cp_$ID","customerId":"cus_4f1a9c","name":"Globex GmbH","type":"business","country":"DE","email":"payables@globex.example","status":"active","createdAt":$NOW}"#,
    ),
    (
        "payout_account.created",
        r#"{"id":"pa_$ID","customerId":"cus_4f1a9c","type":"bank_account","bankName":"Barclays","accountName":"Acme Ltd","accountNumber":"41234567","sortCode":"20-00-00","currency":"gbp","status":"active","createdAt":$NOW}"#,
    ),
    (
        "card.created",
        r#"{"id":"card_$ID","customerId":"cus_4f1a9c","brand":"visa","last4":"4242","expMonth":12,"expYear":2029,"currency":"usd","status":"active","createdAt":$NOW,"updatedAt":$NOW}"#,
    ),
    (
        "card.updated",
        r#"{"id":"card_$ID","customerId":"cus_4f1a9c","brand":"visa","last4":"4242","expMonth":12,"expYear":2029,"currency":"usd","status":"frozen","createdAt":1763855940000,"updatedAt":$NOW}"#,
    ),
    (
        "dispute.created",
        r#"{"id":"dp_$ID","transactionId":"txn_c81d5e","customerId":"cus_4f1a9c","amount":"75.00","currency":"usd","reason":"fraudulent","status":"needs_response","createdAt":$NOW,"updatedAt":$NOW}"#,
    ),
    (
        "dispute.updated",
        r#"{"id":"dp_$ID","transactionId":"txn_c81d5e","customerId":"cus_4f1a9c","amount":"75.00","currency":"usd","reason":"fraudulent","status":"under_review","createdAt":1763855940000,"updatedAt":$NOW}"#,
    ),
    ("webhook.test", r#"{"message":"hello"}"#),
];

/// Ledig names its events with `_`; the payloads use the key spellings of its docs' table.
const LEDIG: &[(&str, &str)] = &[
    (
        "settlement_wallet_update",
        r#"{"Alias":"settle-usdt-$ID","Address":"TQn9Y2khEsLJW1ChVWFMSMeRDow5KcbLSE","Network":"TRC20","Asset Supported":"USDT","status":"active","Business":"Acme Ltd"}"#,
    ),
    (
        "settlement_account_update",
        r#"{"Alias":"settle-ngn-$ID","Bank Name":"Providus Bank","Account Number":"0123456789","Account Name":"Acme Ltd","status":"verified","Currency":"NGN"}"#,
    ),
    (
        "crypto_received",
        r#"{"id":"dep_$ID","wallet_alias":"acme-usdt","wallet_address":"TXo3sJ9kq1","tx_hash":"0x5be1d9$ID","coin":"USDT","Amount":"150.25","status":"completed","fee":"0.50"}"#,
    ),
    (
        "virtual_account_created",
        r#"{"Alias":"va-$ID","Bank":"Wema Bank","Account Number":"7812345690","Account Name":"Acme Ltd","Merchant Associated":"acme-store","Business":"Acme Ltd","Currency":"NGN"}"#,
    ),
    (
        "virtual_account_credited",
        r#"{"id":"vac_$ID","currency":"NGN","Amount":"50000.00","status":"successful","Account received alias":"va-acme-store","Sender Bank":"GTBank","Sender account name":"Chinedu Eze","Sender account number":"0011223344"}"#,
    ),
    (
        "crypto_payout_update",
        r#"{"id":"pay_$ID","coin":"USDT","Amount sent":"99.00","Wallet received alias":"vendor-usdt","status":"pending","fee":"1.00","tx_hash":"0x7ac3e2$ID"}"#,
    ),
    (
        "admin_funding",
        r#"{"id":"fund_$ID","Asset":"USDT","Amount":"1000.00","status":"completed","Business":"Acme Ltd","fee":"0.00","credit/debit":"credit","fiat/crypto":"crypto"}"#,
    ),
];

fn templates(provider: Provider) -> &'static [(&'static str, &'static str)] {
    match provider {
        Provider::Ledger => LEDGER,
        Provider::Ledig => LEDIG,
    }
}

/// Every sample type as the gateway stores it (`ledger.transaction.completed`), in catalogue
/// order.
pub(crate) fn stored_types(provider: Provider) -> impl Iterator<Item = String> {
    templates(provider)
        .iter()
        .map(move |(name, _)| format!("{}.{name}", provider.name()))
}

/// Which provider has a sample of this type; the type may carry the provider prefix
/// (`ledig.crypto_received`) or not (`crypto_received`).
pub(crate) fn find(event_type: &str) -> Option<(Provider, &'static str)> {
    [Provider::Ledger, Provider::Ledig]
        .into_iter()
        .find_map(|p| lookup(p, event_type).map(|(name, _)| (p, name)))
}

fn lookup(provider: Provider, event_type: &str) -> Option<(&'static str, &'static str)> {
    let bare = event_type
        .strip_prefix(provider.name())
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(event_type);
    templates(provider)
        .iter()
        .find(|(name, _)| *name == bare)
        .copied()
}

/// A fresh random id part: 12 hex digits, enough that sends never collide by chance.
pub(crate) fn fresh_id() -> String {
    format!("{:012x}", rand::rng().random::<u64>() & 0xffff_ffff_ffff)
}

/// The body of one sample of `event_type` (`None` when the provider has no such type), with
/// `id` in every id and the current time.
pub(crate) fn body(provider: Provider, event_type: &str, id: &str) -> Option<String> {
    let (name, template) = lookup(provider, event_type)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        .to_string();
    let data = template.replace("$ID", id).replace("$NOW", &now);
    Some(match provider {
        Provider::Ledger => {
            format!(r#"{{"id":"evt_{id}","type":"{name}","createdAt":{now},"data":{data}}}"#)
        }
        Provider::Ledig => format!(r#"{{"event":"{name}","data":{data}}}"#),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway::config::{
        LedgerSettings, LedigSettings, ProviderSettings, SignatureScheme, SourceSettings,
    };
    use gateway::providers::{OTHER_TYPE, Source};
    use std::time::Duration;

    fn catalogue(provider: Provider) -> Vec<String> {
        let settings = match provider {
            Provider::Ledger => ProviderSettings::Ledger(LedgerSettings {
                secrets: Vec::new(),
                scheme: SignatureScheme::Any,
                tolerance: Duration::from_secs(1),
            }),
            Provider::Ledig => ProviderSettings::Ledig(LedigSettings {
                token: None,
                basic_auth: None,
                allow_ips: Vec::new(),
                retry_window: Duration::from_secs(1),
            }),
        };
        let source = Source::new(&SourceSettings {
            name: "s".into(),
            path: "/s".into(),
            provider: settings,
        });
        source
            .catalogue()
            .iter()
            .filter(|t| **t != OTHER_TYPE)
            .map(|t| (*t).to_owned())
            .collect()
    }

    #[test]
    fn every_catalogue_type_has_a_sample_and_no_other() {
        for provider in [Provider::Ledger, Provider::Ledig] {
            let samples: Vec<String> = stored_types(provider).collect();
            assert_eq!(samples, catalogue(provider), "{provider:?}");
        }
    }

    #[test]
    fn samples_are_json_with_the_id_and_type_the_provider_sends() {
        for provider in [Provider::Ledger, Provider::Ledig] {
            for (name, _) in templates(provider) {
                let text = body(provider, name, "abc123").expect("a sample");
                let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                match provider {
                    Provider::Ledger => {
                        assert_eq!(v["id"], "evt_abc123");
                        assert_eq!(v["type"], *name);
                        assert!(v["createdAt"].is_number());
                    }
                    Provider::Ledig => assert_eq!(v["event"], *name),
                }
                assert!(v["data"].is_object(), "{text}");
                if *name != "webhook.test" {
                    assert!(v["data"].to_string().contains("abc123"), "{text}");
                }
            }
        }
    }

    #[test]
    fn types_are_found_with_or_without_the_provider_prefix() {
        assert_eq!(
            find("transaction.completed"),
            Some((Provider::Ledger, "transaction.completed"))
        );
        assert_eq!(
            find("ledig.crypto_received"),
            Some((Provider::Ledig, "crypto_received"))
        );
        assert_eq!(find("ledger.crypto_received"), None);
        assert_eq!(find("nope"), None);
        assert_ne!(fresh_id(), fresh_id());
    }
}
