//! Helpers shared by the Rust example plugins; plain Rust, no bindings, so it is unit-testable
//! on the host (`cargo test -p payload-kit --target x86_64-unknown-linux-gnu` in `plugins/`).
//!
//! - [`key`]: provider payloads spell field names loosely ("Amount", "tx_hash", "Tx Hash"), so
//!   keys are compared after dropping case, spaces, `_` and `-`.
//! - [`Decimal`]: amounts are decimal strings and must never go through `f64`. A [`Decimal`] is
//!   parsed from the text and compared digit by digit; [`amount_text`] turns a JSON string or
//!   number (serde_json's `arbitrary_precision` keeps the number's text) into a plain decimal
//!   string, unchanged whenever it already is one.
#![forbid(unsafe_code)]

pub mod key {
    //! Tolerant key matching.
    use serde_json::{Map, Value};

    /// `key` without case, spaces, `_` and `-`: "Tx Hash", "tx_hash" and "TX-HASH" -> "txhash".
    pub fn normalize(key: &str) -> String {
        key.chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect()
    }

    /// The first of `names` (in that order of preference) that `object` has, compared
    /// tolerantly; returns the key as spelled in `object` and its value.
    pub fn find<'a>(
        object: &'a Map<String, Value>,
        names: &[&str],
    ) -> Option<(&'a str, &'a Value)> {
        names.iter().find_map(|name| {
            let wanted = normalize(name);
            object
                .iter()
                .find(|(key, _)| normalize(key) == wanted)
                .map(|(key, value)| (key.as_str(), value))
        })
    }

    /// Like [`find`], but only a non-empty string (trimmed) counts.
    pub fn find_str<'a>(object: &'a Map<String, Value>, names: &[&str]) -> Option<&'a str> {
        names.iter().find_map(|name| {
            let wanted = normalize(name);
            object.iter().find_map(|(key, value)| match value {
                Value::String(s) if normalize(key) == wanted && !s.trim().is_empty() => {
                    Some(s.trim())
                }
                _ => None,
            })
        })
    }
}

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

/// Largest exponent accepted in "1e5"-style numbers: anything bigger is no amount.
const MAX_EXPONENT: i64 = 64;

/// An exact decimal number, as digits: no rounding, no `f64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    /// Integer digits without leading zeros ("" for zero).
    int: String,
    /// Fraction digits without trailing zeros.
    frac: String,
}

/// Why a text is not a decimal number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotDecimal(pub String);

impl fmt::Display for NotDecimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a decimal number", self.0)
    }
}

impl std::error::Error for NotDecimal {}

impl Decimal {
    /// Parses `[+-]digits[.digits][(e|E)[+-]digits]` (surrounding white space allowed; at least
    /// one digit before or after the point). Exponents beyond ±64 are refused.
    pub fn parse(text: &str) -> Result<Decimal, NotDecimal> {
        let err = || NotDecimal(text.to_string());
        let s = text.trim();
        let (negative, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exponent) = match s.find(['e', 'E']) {
            Some(at) => {
                let exp: i64 = s[at + 1..].parse().map_err(|_| err())?;
                if exp.abs() > MAX_EXPONENT {
                    return Err(err());
                }
                (&s[..at], exp)
            }
            None => (s, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return Err(err());
        }
        // Shift the point by the exponent over the concatenated digits.
        let mut digits = format!("{int}{frac}");
        let mut point = i64::try_from(int.len()).map_err(|_| err())? + exponent;
        if point < 0 {
            let pad = usize::try_from(-point).map_err(|_| err())?;
            digits.insert_str(0, &"0".repeat(pad));
            point = 0;
        }
        let point = usize::try_from(point).map_err(|_| err())?;
        if point > digits.len() {
            digits.push_str(&"0".repeat(point - digits.len()));
        }
        let (int, frac) = digits.split_at(point);
        let int = int.trim_start_matches('0').to_string();
        let frac = frac.trim_end_matches('0').to_string();
        let zero = int.is_empty() && frac.is_empty();
        Ok(Decimal {
            negative: negative && !zero,
            int,
            frac,
        })
    }

    /// Whether the number is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        self.int
            .len()
            .cmp(&other.int.len())
            .then_with(|| self.int.cmp(&other.int))
            .then_with(|| self.frac.cmp(&other.frac))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Decimal {
    /// The canonical plain form: "-12.5", "0.001", "0".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        let int = if self.int.is_empty() { "0" } else { &self.int };
        if self.frac.is_empty() {
            write!(f, "{sign}{int}")
        } else {
            write!(f, "{sign}{int}.{}", self.frac)
        }
    }
}

/// Whether `s` is already a plain decimal: `[-]digits[.digits]` with no exponent and no sign
/// other than a leading `-`.
fn is_plain_decimal(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && (!s.contains('.') || (!frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit())))
}

/// An amount as a decimal string, from a JSON string ("10.50") or number (10.50): the text is
/// kept exactly when it is already a plain decimal ("10.50" stays "10.50"); other forms that
/// are still exact decimals ("+5", "1e3", ".5") become their canonical plain form ("5",
/// "1000", "0.5"). Anything else (a bool, an object, "ten", "") is an error.
pub fn amount_text(value: &Value) -> Result<String, NotDecimal> {
    let text = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        other => return Err(NotDecimal(other.to_string())),
    };
    if is_plain_decimal(&text) {
        return Ok(text);
    }
    Decimal::parse(&text).map(|d| d.to_string())
}

/// [`amount_text`] parsed into a [`Decimal`].
pub fn amount_decimal(value: &Value) -> Result<Decimal, NotDecimal> {
    amount_text(value).and_then(|text| Decimal::parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).expect("test decimal")
    }

    #[test]
    fn keys_match_without_case_space_underscore_dash() {
        assert_eq!(key::normalize("Tx Hash"), "txhash");
        assert_eq!(key::normalize("tx_hash"), "txhash");
        assert_eq!(key::normalize("TX-HASH"), "txhash");
        let obj = json!({"AMOUNT": "1", "Tx Hash": "0xab", "empty": " "});
        let map = obj.as_object().expect("object");
        assert_eq!(key::find(map, &["amount"]).map(|(k, _)| k), Some("AMOUNT"));
        assert_eq!(key::find_str(map, &["nope", "tx_hash"]), Some("0xab"));
        assert_eq!(key::find_str(map, &["empty"]), None);
    }

    #[test]
    fn decimals_compare_exactly() {
        assert_eq!(d("10.50"), d("10.5"));
        assert!(d("1000") > d("999.999999999999999999"));
        assert!(d("0.1") < d("0.10000000000000000001"));
        assert!(d("-5") < d("-4.9"));
        assert!(d("-0") == d("0"));
        assert!(d("1e3") == d("1000"));
        assert!(d("12345678901234567890123") > d("12345678901234567890122.99"));
        assert_eq!(d("007.100").to_string(), "7.1");
        assert_eq!(d("1.5E-3").to_string(), "0.0015");
        for bad in ["", ".", "-", "1.2.3", "ten", "1e", "1e999", "0x10", "1,000"] {
            assert!(Decimal::parse(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn amounts_keep_their_text() {
        assert_eq!(amount_text(&json!("10.50")).as_deref(), Ok("10.50"));
        assert_eq!(amount_text(&json!(" 7 ")).as_deref(), Ok("7"));
        let n: Value = serde_json::from_str("10.50").expect("json");
        assert_eq!(amount_text(&n).as_deref(), Ok("10.50"));
        let n: Value = serde_json::from_str("123456789012345678901234567890.000001").expect("json");
        assert_eq!(
            amount_text(&n).as_deref(),
            Ok("123456789012345678901234567890.000001")
        );
        let n: Value = serde_json::from_str("2.5e2").expect("json");
        assert_eq!(amount_text(&n).as_deref(), Ok("250"));
        assert_eq!(amount_text(&json!("+5")).as_deref(), Ok("5"));
        assert!(amount_text(&json!(true)).is_err());
        assert!(amount_text(&json!("")).is_err());
        assert!(amount_text(&json!("12 USD")).is_err());
    }
}
