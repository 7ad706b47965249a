//! The one place the plugin world is turned into Rust: `bindgen!` over `wit/plugin.wit`.
//!
//! Host calls are synchronous: a plugin call runs on a blocking worker thread under fuel and
//! epoch limits, so there is nothing to gain from async host functions here.

#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
});

pub(crate) use webhook_gateway::plugin::host::{Host, Level};
pub(crate) use webhook_gateway::plugin::types::Host as TypesHost;
