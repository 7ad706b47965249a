//! What every normalizer target checks, shared by the `normalize_*` fuzz targets.

use gateway_providers::normalize_local_payload;

/// One fixed arrival time: a Ledig key names its arrival, so "the same bytes give the same
/// key" holds for deliveries received at the same moment (what tells a retry from a new event,
/// `retry_identity`, does not depend on it at all).
const RECEIVED_MS: i64 = 1_763_892_000_000;

/// `provider`'s normalizer on arbitrary bytes (a body that passed authentication can still be
/// anything): it never panics, what it accepts becomes an envelope that serializes to JSON,
/// and the same bytes always give the same dedup key.
pub fn normalizer_holds(provider: &str, data: &[u8]) {
    let Ok(first) = normalize_local_payload(provider, provider, data, RECEIVED_MS) else {
        return;
    };
    let parts = first.envelope.to_json_parts();
    let json = parts.text;
    assert!(
        serde_json::from_str::<serde_json::Value>(&json).is_ok(),
        "{json}"
    );
    // Where the envelope and the body are said to hold `data`, they do: a store keeps it once.
    let value = first.envelope.data.get();
    let range = parts.data.expect("data located in the envelope");
    assert_eq!(&json[range], value);
    if let Some(at) = first.data_in_body {
        assert_eq!(data.get(at..at + value.len()), Some(value.as_bytes()));
    }
    let again =
        normalize_local_payload(provider, provider, data, RECEIVED_MS).expect("accepted once, accepted again");
    assert_eq!(first.dedup_key.as_str(), again.dedup_key.as_str());
    assert_eq!(first.retry_identity, again.retry_identity);
}
