//! `threshold`: compares an event's amount with a decimal threshold, exactly (no `f64`).
//!
//! Settings (`[plugins.NAME.settings]`):
//! - `threshold` (required): a decimal, e.g. "1000" or "0.5". Missing or not a decimal: every
//!   call fails fatally with that reason (a config mistake must not let events through).
//! - `mode`: `flag` (default) passes every event, adding the extension
//!   `("largedeposit", "true")` to those whose amount is >= threshold (data untouched);
//!   `drop-below` drops events whose amount is < threshold; `drop-above` drops events whose
//!   amount is > threshold.
//! - `amount_field`: the key in `data` holding the amount; default `amount`, `Amount`,
//!   `finalAmount` (exact spelling first, then ignoring case, spaces, `_`, `-`).
//!
//! An event whose data has no amount passes unchanged (logged at debug): it is not what this
//! plugin judges. An amount that is present but not a decimal fails fatally.

mod rule;

wit_bindgen::generate!({ path: "../../../wit", world: "plugin" });

use webhook_gateway::plugin::host::{self, Level};

use rule::{Decision, Rule};

/// The exported component.
struct Threshold;

impl Guest for Threshold {
    fn handle(event: Event) -> Result<Verdict, Failure> {
        let rule = Rule::from_settings(host::setting).map_err(Failure::Fatal)?;
        match rule.decide(&event.data).map_err(Failure::Fatal)? {
            Decision::NoAmount => {
                host::log(
                    Level::Debug,
                    &format!("{}: no amount; passed unchanged", event.id),
                );
                Ok(Verdict::Pass(event))
            }
            Decision::Pass => Ok(Verdict::Pass(event)),
            Decision::Flag => {
                host::log(
                    Level::Debug,
                    &format!("{}: flagged as a large deposit", event.id),
                );
                Ok(Verdict::Pass(rule::flagged(event)))
            }
            Decision::Drop(reason) => {
                host::log(Level::Debug, &format!("{}: {reason}", event.id));
                Ok(Verdict::Drop(reason))
            }
        }
    }
}

export!(Threshold);
