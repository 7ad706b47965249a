//! The one place the plugin world is turned into Rust: `bindgen!` over `wit/plugin.wit`.
//!
//! `handle` (and instantiation) is called asynchronously: a call runs on a wasmtime fiber, so
//! a plugin waiting in a WASI host call (a sleep, a poll) suspends instead of blocking a
//! thread, and the call can be cut off at its deadline wherever it is (see `loaded.rs`). The
//! gateway's own imports (`log`, `setting`) never wait, so they stay synchronous.

#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    exports: { default: async },
});

pub(crate) use webhook_gateway::plugin::host::{Host, Level};
pub(crate) use webhook_gateway::plugin::types::Host as TypesHost;
