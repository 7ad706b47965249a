//! Signed Ledger deliveries, built as cheaply as the generator can afford: unique events (ids
//! carry a run nonce, so re-runs against an old database stay unique) signed with
//! `X-Ledger-Signature: t=<secs>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, and, at the
//! configured share, exact repeats (same bytes and headers) of an event sent recently on the
//! same connection, so the original has always been answered before its duplicate is sent.

use bytes::Bytes;
use gateway_providers::signing::LedgerSigner;
use http::HeaderValue;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// The benchmark's Ledger secret; the gateway reads it from `LOADGEN_LEDGER_SECRET`. For the
/// `ledger` scheme the HMAC key is the string's bytes as written, prefix included.
pub(crate) const SECRET: &str = "whsec_loadgen_benchmark_secret";
/// The environment variable the generated gateway config names for the secret.
pub(crate) const SECRET_ENV: &str = "LOADGEN_LEDGER_SECRET";
pub(crate) const EVENT_TYPE: &str = "transaction.completed";

/// How many recent events per connection a duplicate may repeat.
const RECENT: usize = 8;
/// `,"memo":""`: what padding costs before its first filler byte.
const MEMO_OVERHEAD: usize = 10;

/// One request body with its headers, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) body: Bytes,
    pub(crate) id: HeaderValue,
    pub(crate) signature: HeaderValue,
    /// An exact repeat of an earlier delivery (the gateway should answer `"duplicate":true`).
    pub(crate) repeat: bool,
}

/// Hands out an independent event source per connection, all unique within the run.
#[derive(Debug)]
pub(crate) struct EventStreams {
    nonce: u64,
    next: u64,
    duplicates: f64,
    body_size: usize,
    signer: LedgerSigner,
    /// Subjects each source cycles through (`loadgen e2e --ordered`); `None`: every event is
    /// about an object of its own.
    subjects_per_source: Option<u64>,
}

impl EventStreams {
    pub(crate) fn new(duplicates: f64, body_size: usize) -> anyhow::Result<Self> {
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Self {
            nonce,
            next: 0,
            duplicates,
            body_size,
            // Keyed once; every event clones the keyed state instead of re-hashing the key.
            signer: LedgerSigner::new(SECRET.as_bytes()),
            subjects_per_source: None,
        })
    }

    /// Sources taken from now on spread their events over `n` subjects each (one source sends
    /// in order, one request at a time, so a subject's events arrive in the order made).
    pub(crate) fn set_subjects_per_source(&mut self, n: Option<u64>) {
        self.subjects_per_source = n.map(|n| n.max(1));
    }

    pub(crate) fn take(&mut self) -> EventSource {
        self.next += 1;
        EventSource {
            signer: self.signer.clone(),
            prefix: format!("{:x}_{}", self.nonce, self.next),
            seq: 0,
            duplicates: self.duplicates,
            body_size: self.body_size,
            rng: (self.nonce ^ self.next.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
            recent: VecDeque::with_capacity(RECENT),
            subjects: self.subjects_per_source,
        }
    }
}

/// The deliveries of one connection.
#[derive(Debug)]
pub(crate) struct EventSource {
    signer: LedgerSigner,
    prefix: String,
    seq: u64,
    duplicates: f64,
    body_size: usize,
    rng: u64,
    recent: VecDeque<Delivery>,
    subjects: Option<u64>,
}

impl EventSource {
    /// xorshift64*: cheap, and plenty to pick duplicates.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The next delivery: at the duplicate share a repeat of a recent one, else a new event.
    pub(crate) fn next_delivery(&mut self) -> Delivery {
        let roll = (self.random() >> 11) as f64 / (1u64 << 53) as f64;
        if roll < self.duplicates && !self.recent.is_empty() {
            let pick = (self.random() % self.recent.len() as u64) as usize;
            if let Some(d) = self.recent.get(pick) {
                return Delivery {
                    repeat: true,
                    ..d.clone()
                };
            }
        }
        let delivery = self.fresh();
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(delivery.clone());
        delivery
    }

    fn fresh(&mut self) -> Delivery {
        self.seq += 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let ms = now.as_millis();
        let (prefix, seq) = (&self.prefix, self.seq);
        let id = format!("evt_{prefix}_{seq}");
        // The object the event is about: its own, or one of the source's subjects in turn.
        let object = match self.subjects {
            Some(n) => format!("s{}", seq % n),
            None => seq.to_string(),
        };
        let mut body = String::with_capacity(self.body_size.max(512));
        // Writing to a String cannot fail.
        let _ = write!(
            body,
            r#"{{"id":"{id}","type":"{EVENT_TYPE}","createdAt":{ms},"data":{{"id":"txn_{prefix}_{object}","customerId":"cus_8f2a41","type":"transfer","status":"payment_processed","amount":"5.0","sourceCurrency":"usdc","destinationCurrency":"gbp","payoutAccountId":"pa_51c0e9","finalAmount":"3.38","exchangeFee":"0.0","createdAt":{ms},"updatedAt":{ms}"#,
        );
        // Closing `}}` follows; pad inside `data` to the requested size exactly.
        let room = self.body_size.saturating_sub(body.len() + 2);
        if room >= MEMO_OVERHEAD {
            body.push_str(r#","memo":""#);
            body.extend(std::iter::repeat_n('x', room - MEMO_OVERHEAD));
            body.push('"');
        }
        body.push_str("}}");

        let t = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let signature = self.signer.header(t, body.as_bytes());
        Delivery {
            body: Bytes::from(body),
            // Both are ASCII letters, digits, `_`, `=` and `,`: always valid header values.
            id: HeaderValue::from_maybe_shared(Bytes::from(id))
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            signature: HeaderValue::from_maybe_shared(Bytes::from(signature))
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            repeat: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac as _};
    use sha2::Sha256;

    #[test]
    fn signature_matches_the_ledger_scheme() -> anyhow::Result<()> {
        let mut source = EventStreams::new(0.0, 0)?.take();
        let d = source.next_delivery();
        let sig = d.signature.to_str()?;
        let (t, v1) = sig
            .strip_prefix("t=")
            .and_then(|s| s.split_once(",v1="))
            .ok_or_else(|| anyhow::anyhow!("bad header {sig}"))?;
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(SECRET.as_bytes())?;
        mac.update(format!("{t}.").as_bytes());
        mac.update(&d.body);
        mac.verify_slice(&hex::decode(v1)?)?;
        let body = std::str::from_utf8(&d.body)?;
        assert!(body.starts_with(&format!(r#"{{"id":"{}""#, d.id.to_str()?)));
        Ok(())
    }

    #[test]
    fn ids_are_unique_and_repeats_are_exact() -> anyhow::Result<()> {
        let mut streams = EventStreams::new(0.5, 0)?;
        let mut a = streams.take();
        let mut b = streams.take();
        let mut seen = std::collections::HashMap::new();
        let mut repeats = 0;
        for _ in 0..1000 {
            for d in [a.next_delivery(), b.next_delivery()] {
                let previous = seen.insert(d.id.clone(), d.body.clone());
                assert_eq!(previous.is_some(), d.repeat);
                if let Some(body) = previous {
                    assert_eq!(body, d.body);
                    repeats += 1;
                }
            }
        }
        assert!((800..1200).contains(&repeats), "{repeats} repeats");
        Ok(())
    }

    #[test]
    fn body_size_is_exact() -> anyhow::Result<()> {
        for size in [600, 1024, 4096] {
            let mut source = EventStreams::new(0.0, size)?.take();
            assert_eq!(source.next_delivery().body.len(), size);
        }
        let natural = EventStreams::new(0.0, 0)?.take().next_delivery().body.len();
        assert!((350..450).contains(&natural), "{natural}");
        Ok(())
    }
}
