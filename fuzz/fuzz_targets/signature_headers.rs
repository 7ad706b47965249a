//! The signature-header parsers (`X-Ledger-Signature: t=..,v1=..`, Standard Webhooks
//! `v1,<base64> ...`, unix timestamps) on arbitrary text: they run on every request before any
//! secret is involved, so they must never panic, whatever a client sends.
#![no_main]

use gateway_providers::signature::{parse_ledger_header, parse_standard_signatures, parse_unix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_ledger_header(text);
    let _ = parse_standard_signatures(text);
    let _ = parse_unix(text);
});
