//! Signed Ledger deliveries: unique events (ids carry a run nonce, so re-runs against an old
//! database stay unique) and, at the configured share, exact repeats of an earlier delivery.

use bytes::Bytes;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The benchmark's Ledger secret (passed to the gateway in its environment).
pub(crate) const SECRET: &str = "whsec_bG9hZGdlbi1iZW5jaG1hcmstc2VjcmV0LTAwMDE=";

/// One request ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) body: Bytes,
    pub(crate) id: http::HeaderValue,
    pub(crate) signature: http::HeaderValue,
}

/// Produces deliveries for one connection.
#[derive(Debug)]
pub(crate) struct EventSource {
    mac: Hmac<Sha256>,
    prefix: String,
    seq: u64,
    duplicates: f64,
    rng: u64,
    last: Option<Delivery>,
}

impl EventSource {
    pub(crate) fn new(nonce: u64, stream: usize, duplicates: f64) -> Self {
        // A fixed, valid key length for HMAC: construction cannot fail.
        let mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(SECRET.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self {
            mac,
            prefix: format!("{nonce:x}_{stream}"),
            seq: 0,
            duplicates,
            rng: nonce ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            last: None,
        }
    }

    fn chance(&mut self) -> f64 {
        // xorshift64*: cheap and good enough to pick duplicates.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next delivery: a repeat of the previous one at the duplicate share, else a new event.
    pub(crate) fn next(&mut self) -> Delivery {
        if self.chance() < self.duplicates
            && let Some(last) = &self.last
        {
            return last.clone();
        }
        self.seq += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!("evt_{}_{}", self.prefix, self.seq);
        let body = format!(
            r#"{{"id":"{id}","type":"transaction.completed","createdAt":{ms},"data":{{"id":"txn_{p}_{s}","customerId":"cus_8f2a","type":"transfer","status":"payment_processed","amount":"5.0","sourceCurrency":"usdc","destinationCurrency":"gbp","payoutAccountId":"pa_51c0","finalAmount":"3.38","exchangeFee":"0.0","createdAt":{ms},"updatedAt":{ms}}}}}"#,
            ms = now.as_millis(),
            p = self.prefix,
            s = self.seq
        );
        let t = now.as_secs().to_string();
        let mut mac = self.mac.clone();
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        let sig = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
        let delivery = Delivery {
            body: Bytes::from(body),
            id: http::HeaderValue::from_str(&id).unwrap_or(http::HeaderValue::from_static("x")),
            signature: http::HeaderValue::from_str(&sig)
                .unwrap_or(http::HeaderValue::from_static("x")),
        };
        self.last = Some(delivery.clone());
        delivery
    }
}
