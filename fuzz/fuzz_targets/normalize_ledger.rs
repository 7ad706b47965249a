//! The ledger normalizer on arbitrary bytes; the properties are in `gateway_fuzz::normalizer_holds`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gateway_fuzz::normalizer_holds("ledger", data));
