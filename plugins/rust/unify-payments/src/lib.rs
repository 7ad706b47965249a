//! `unify-payments`: one `payment.received` event shape for every deposit, whatever the
//! provider, so destinations downstream parse one schema.
//!
//! Deposits are Ledig `crypto_received` and `virtual_account_credited`, and Ledger
//! `transaction.*` events whose transaction `type` names a deposit (see [`convert`] for the
//! exact rules). Each becomes `emit([payment.received])`; every other event passes unchanged.
//! A deposit without a usable amount or currency fails fatally (dead-lettered with the reason).
//!
//! This file is only the binding to the WIT world; the conversion is plain Rust in
//! [`convert`], unit-tested on the host.

mod convert;

wit_bindgen::generate!({ path: "../../../wit", world: "plugin" });

use webhook_gateway::plugin::host::{self, Level};

use convert::Outcome;

/// The exported component.
struct UnifyPayments;

impl Guest for UnifyPayments {
    fn handle(event: Event) -> Result<Verdict, Failure> {
        match convert::unify(&event) {
            Ok(Outcome::Unchanged(why)) => {
                host::log(
                    Level::Debug,
                    &format!("{}: {why}; passed unchanged", event.type_),
                );
                Ok(Verdict::Pass(event))
            }
            Ok(Outcome::Payment {
                event: payment,
                notes,
            }) => {
                for note in &notes {
                    host::log(Level::Warn, note);
                }
                host::log(
                    Level::Debug,
                    &format!("{} -> {} {}", event.type_, payment.id, payment.data),
                );
                Ok(Verdict::Emit(vec![payment]))
            }
            Err(reason) => Err(Failure::Fatal(reason)),
        }
    }
}

export!(UnifyPayments);
