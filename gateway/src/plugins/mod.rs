//! Plugins: user-supplied WebAssembly components that see each routed event and return a
//! verdict (pass, drop, emit) or a failure (retry, fatal).
//!
//! Owns the wasmtime engine ([`PluginEngine`]: component model, pooling, epoch deadlines, fuel,
//! compiled-code cache), the threads plugin calls run on (`threads`), the WIT bindings (one
//! `bindgen!` in `bindings`), the host side of the contract (`state`), conversions that
//! validate everything a plugin returns (`event`), and a call under hard limits
//! ([`LoadedPlugin::call_async`]): it ends by its deadline whatever the plugin does, a wait in
//! a WASI host call included. A misbehaving plugin fails only its own call, with a reason; it
//! never panics or stalls the gateway. This module never touches HTTP or the store.

mod bindings;
mod engine;
mod event;
mod health;
mod loaded;
mod state;
mod threads;

pub use engine::{EPOCH_TICK, PluginEngine};
pub use event::PluginEvent;
pub use health::{Admission, HealthReport, PluginBoard, PluginHealth, Transition};
pub use loaded::{LoadedPlugin, PluginCall};
pub use state::PluginLog;
pub use threads::PluginThreads;

/// What a plugin call came to.
#[derive(Debug)]
pub enum PluginOutcome {
    /// Continue with this (possibly changed) event.
    Pass(PluginEvent),
    /// Stop, with the plugin's reason.
    Drop(String),
    /// Replace the event with these.
    Emit(Vec<PluginEvent>),
    /// The plugin asked to be called again later (or every instance slot was in use).
    Retry(String),
    /// The plugin says the event can never be handled, or returned something invalid.
    Fatal(String),
    /// The plugin trapped (panic, out of memory, instantiation failure).
    Trap(String),
    /// The plugin hit its deadline or ran out of fuel.
    Timeout(String),
}

impl PluginOutcome {
    /// The `result` label of `gateway_plugin_calls_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pass(_) => "pass",
            Self::Drop(_) => "drop",
            Self::Emit(_) => "emit",
            Self::Retry(_) => "retry",
            Self::Fatal(_) => "fatal",
            Self::Trap(_) => "trap",
            Self::Timeout(_) => "timeout",
        }
    }

    pub const LABELS: [&'static str; 7] =
        ["pass", "drop", "emit", "retry", "fatal", "trap", "timeout"];

    /// The verdict as JSON text (see the `Serialize` impl).
    pub fn to_json(&self) -> String {
        // Strings and already-valid JSON always serialize.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// `{"verdict": LABEL}` plus `"event"` (pass), `"events"` (emit) or `"reason"`, for `gateway
/// plugin run`. Events are written as delivered: their `data` exactly as the plugin returned it.
impl serde::Serialize for PluginOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("verdict", self.label())?;
        match self {
            Self::Pass(e) => map.serialize_entry("event", e)?,
            Self::Emit(list) => map.serialize_entry("events", list)?,
            Self::Drop(r) | Self::Retry(r) | Self::Fatal(r) | Self::Trap(r) | Self::Timeout(r) => {
                map.serialize_entry("reason", r)?;
            }
        }
        map.end()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("plugin `{plugin}`: {reason}")]
    Load { plugin: String, reason: String },
}
