//! The settings and the decision, without host calls (unit-tested on the host).

use payload_kit::{Decimal, key};
use serde_json::{Map, Value};

use crate::webhook_gateway::plugin::types::Event;

/// The extension added in `flag` mode.
pub(crate) const FLAG: (&str, &str) = ("largedeposit", "true");

const DEFAULT_AMOUNT_FIELDS: &[&str] = &["amount", "Amount", "finalAmount"];

/// What to do when the amount crosses the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Flag,
    DropBelow,
    DropAbove,
}

/// The parsed settings.
#[derive(Debug)]
pub(crate) struct Rule {
    threshold: Decimal,
    threshold_text: String,
    mode: Mode,
    amount_field: Option<String>,
}

/// The outcome for one event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    NoAmount,
    Pass,
    Flag,
    Drop(String),
}

impl Rule {
    /// Reads the settings through `setting` (the host's `setting` import in the plugin).
    pub(crate) fn from_settings(setting: impl Fn(&str) -> Option<String>) -> Result<Rule, String> {
        let threshold_text = setting("threshold")
            .map(|t| t.trim().to_string())
            .ok_or("setting `threshold` is required (a decimal, e.g. \"1000\")")?;
        let threshold =
            Decimal::parse(&threshold_text).map_err(|e| format!("setting `threshold`: {e}"))?;
        let mode = match setting("mode").as_deref().map(str::trim) {
            None | Some("flag") => Mode::Flag,
            Some("drop-below") => Mode::DropBelow,
            Some("drop-above") => Mode::DropAbove,
            Some(other) => {
                return Err(format!(
                    "setting `mode`: {other:?} is not one of flag, drop-below, drop-above"
                ));
            }
        };
        let amount_field = setting("amount_field")
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty());
        Ok(Rule {
            threshold,
            threshold_text,
            mode,
            amount_field,
        })
    }

    /// Judges an event's `data` (JSON text).
    pub(crate) fn decide(&self, data: &str) -> Result<Decision, String> {
        let Ok(Value::Object(data)) = serde_json::from_str::<Value>(data) else {
            return Ok(Decision::NoAmount);
        };
        let Some((field, value)) = self.amount(&data) else {
            return Ok(Decision::NoAmount);
        };
        let text = payload_kit::amount_text(value).map_err(|e| format!("field {field:?}: {e}"))?;
        let amount = Decimal::parse(&text).map_err(|e| format!("field {field:?}: {e}"))?;
        let threshold = &self.threshold_text;
        Ok(match self.mode {
            Mode::Flag if amount >= self.threshold => Decision::Flag,
            Mode::DropBelow if amount < self.threshold => {
                Decision::Drop(format!("amount {text} is below threshold {threshold}"))
            }
            Mode::DropAbove if amount > self.threshold => {
                Decision::Drop(format!("amount {text} is above threshold {threshold}"))
            }
            _ => Decision::Pass,
        })
    }

    fn amount<'a>(&self, data: &'a Map<String, Value>) -> Option<(&'a str, &'a Value)> {
        let fields: Vec<&str> = match &self.amount_field {
            Some(field) => vec![field.as_str()],
            None => DEFAULT_AMOUNT_FIELDS.to_vec(),
        };
        fields
            .iter()
            .find_map(|f| data.get_key_value(*f).map(|(k, v)| (k.as_str(), v)))
            .or_else(|| key::find(data, &fields))
    }
}

/// `event` with the flag extension set (replacing an earlier value of it).
pub(crate) fn flagged(mut event: Event) -> Event {
    event.extensions.retain(|(name, _)| name != FLAG.0);
    event
        .extensions
        .push((FLAG.0.to_string(), FLAG.1.to_string()));
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(settings: &[(&str, &str)]) -> Result<Rule, String> {
        Rule::from_settings(|k| {
            settings
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn settings_are_checked() {
        let err = rule(&[]).expect_err("threshold is required");
        assert!(err.contains("`threshold` is required"), "{err}");
        let err = rule(&[("threshold", "lots")]).expect_err("not a decimal");
        assert!(err.contains("not a decimal"), "{err}");
        let err = rule(&[("threshold", "1"), ("mode", "explode")]).expect_err("bad mode");
        assert!(err.contains("not one of"), "{err}");
    }

    #[test]
    fn flag_mode() -> Result<(), String> {
        let r = rule(&[("threshold", "1000")])?;
        assert_eq!(r.decide(r#"{"amount":"1000.00"}"#)?, Decision::Flag);
        assert_eq!(
            r.decide(r#"{"Amount":"999.999999999999999999"}"#)?,
            Decision::Pass
        );
        assert_eq!(
            r.decide(r#"{"finalAmount":12345678901234567890}"#)?,
            Decision::Flag
        );
        assert_eq!(r.decide(r#"{"AMOUNT":"5000"}"#)?, Decision::Flag);
        assert_eq!(r.decide(r#"{"fee":"5000"}"#)?, Decision::NoAmount);
        assert_eq!(r.decide("not json")?, Decision::NoAmount);
        assert!(r.decide(r#"{"amount":"a lot"}"#).is_err());
        Ok(())
    }

    #[test]
    fn drop_modes() -> Result<(), String> {
        let below = rule(&[("threshold", "10.5"), ("mode", "drop-below")])?;
        assert_eq!(
            below.decide(r#"{"amount":"10.49"}"#)?,
            Decision::Drop("amount 10.49 is below threshold 10.5".into())
        );
        assert_eq!(below.decide(r#"{"amount":"10.50"}"#)?, Decision::Pass);
        let above = rule(&[("threshold", "10.5"), ("mode", "drop-above")])?;
        assert_eq!(above.decide(r#"{"amount":10.50}"#)?, Decision::Pass);
        assert!(matches!(
            above.decide(r#"{"amount":10.51}"#)?,
            Decision::Drop(_)
        ));
        Ok(())
    }

    #[test]
    fn amount_field_setting() -> Result<(), String> {
        let r = rule(&[("threshold", "1"), ("amount_field", "Amount Sent")])?;
        assert_eq!(
            r.decide(r#"{"amount":"0","amount_sent":"2"}"#)?,
            Decision::Flag
        );
        Ok(())
    }

    #[test]
    fn flag_replaces_an_earlier_flag() {
        let event = Event {
            id: "e".into(),
            source: "s".into(),
            type_: "t".into(),
            provider: "p".into(),
            subject: None,
            time: None,
            data: "{}".into(),
            extensions: vec![
                ("largedeposit".into(), "false".into()),
                ("x".into(), "y".into()),
            ],
        };
        let out = flagged(event);
        assert_eq!(
            out.extensions,
            vec![
                ("x".to_string(), "y".to_string()),
                ("largedeposit".into(), "true".into())
            ]
        );
    }
}
