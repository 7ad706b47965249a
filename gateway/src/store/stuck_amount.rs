//! The amount a dead letter keeps: what a delivery would send, read from its envelope when it
//! dies (the extraction the events page shows) and stored on its row as exact decimal text and,
//! when it fits, as an integer and a scale the store can sum without floats. Decimals are
//! parsed and added here exactly; this module never runs a query and never decides anything
//! about delivery.

/// The amount a delivery carries when it dies, kept on its row (`amount`, `currency`,
/// `amount_units`, `amount_scale`) so the groups are one aggregate over an index of the dead
/// deliveries instead of a read of every dead envelope. Taken from the envelope it would send,
/// by the extraction the events page shows ([`super::views::money`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StuckAmount {
    /// Exactly as the payload has it (cut to 64 characters like the listing).
    pub amount: String,
    /// Upper case; `None` when the payload names no currency.
    pub currency: Option<String>,
    /// The amount as `units / 10^scale` when it is a plain decimal whose units fit an i64
    /// (what the aggregate sums); `None` otherwise (summed apart, or not summed).
    pub units: Option<i64>,
    pub scale: Option<i64>,
}

impl StuckAmount {
    /// The amount of an envelope (JSON text), when its payload has one.
    pub fn of_envelope(envelope: &str) -> Option<Self> {
        let envelope = serde_json::from_str::<serde_json::Value>(envelope).ok()?;
        let (amount, currency) = super::views::money(&envelope);
        let amount = amount?;
        let exact = Decimal::parse(&amount)
            .and_then(|d| Some((i64::try_from(d.units).ok()?, i64::from(d.scale))));
        Some(Self {
            currency,
            units: exact.map(|(units, _)| units),
            scale: exact.map(|(_, scale)| scale),
            amount,
        })
    }

    /// What a delivery in `state` keeps: its amount when it is dead, else nothing (the
    /// columns are only read for dead rows).
    pub fn if_dead(state: &super::work::DeliveryState, envelope: &str) -> Option<Self> {
        matches!(state, super::work::DeliveryState::Dead { .. })
            .then(|| Self::of_envelope(envelope))
            .flatten()
    }
}

/// The stored amount's four columns as bound (`amount`, `currency`, `amount_units`,
/// `amount_scale`); all `None` without an amount.
pub(super) fn stuck_columns(
    stuck: Option<&StuckAmount>,
) -> (Option<&str>, Option<&str>, Option<i64>, Option<i64>) {
    match stuck {
        Some(s) => (
            Some(s.amount.as_str()),
            s.currency.as_deref(),
            s.units,
            s.scale,
        ),
        None => (None, None, None, None),
    }
}

/// A decimal as an integer and its count of fraction digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Decimal {
    pub(super) units: i128,
    pub(super) scale: u32,
}

impl Decimal {
    /// `-12.34`, `5`, `+0.5`; no exponents, no separators (those are left unsummed).
    pub(super) fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole
                .chars()
                .chain(fraction.chars())
                .all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let scale = u32::try_from(fraction.len()).ok()?;
        let mut units: i128 = 0;
        for c in whole.chars().chain(fraction.chars()) {
            units = units
                .checked_mul(10)?
                .checked_add(i128::from(c.to_digit(10)?))?;
        }
        Some(Self {
            units: if negative { -units } else { units },
            scale,
        })
    }

    fn rescaled(self, scale: u32) -> Option<Self> {
        let factor = 10_i128.checked_pow(scale.checked_sub(self.scale)?)?;
        Some(Self {
            units: self.units.checked_mul(factor)?,
            scale,
        })
    }

    pub(super) fn checked_add(self, other: Self) -> Option<Self> {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.rescaled(scale)?, other.rescaled(scale)?);
        Some(Self {
            units: a.units.checked_add(b.units)?,
            scale,
        })
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let digits = self.units.unsigned_abs().to_string();
        let scale = usize::try_from(self.scale).unwrap_or(usize::MAX);
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{whole}.{fraction}")
    }
}
