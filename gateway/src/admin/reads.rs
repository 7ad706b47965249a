//! The console's reads beyond the event listings: the overview, the audit trail, and a
//! plugin's dry run (which runs a plugin but stores, routes and delivers nothing).

use super::query::Query;
use super::{
    Admin, Body, DEFAULT_LIMIT, MAX_LIMIT, bad_request, error, no_store, ok_json, overview,
};
use crate::metrics::flow_events::AdminActionTaken;
use crate::plugins::{PluginEvent, PluginOutcome};
use crate::store::{AuditRecord, StoreError};
use http::{Response, StatusCode};
use serde_json::json;
use std::sync::Arc;

impl Admin {
    pub(super) async fn overview(&self, now: i64) -> Result<Response<Body>, StoreError> {
        // A store that cannot answer leaves the rest of the overview useful.
        let backlog = match self.store.backlog().await {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(error = %e, "overview: cannot read the backlog");
                None
            }
        };
        let plugins = self.plugin_list();
        let value = overview::overview(&self.metrics, &self.state, backlog.as_ref(), plugins, now);
        let mut res = ok_json(&value);
        no_store(&mut res);
        Ok(res)
    }

    /// Runs one plugin on a stored event and answers what it decided and changed; nothing is
    /// stored, routed or delivered.
    pub(super) async fn plugin_dry_run(
        &self,
        name: &str,
        query: &Query,
    ) -> Result<Response<Body>, StoreError> {
        let Some(plugin) = self.loaded.get(name).map(Arc::clone) else {
            return Ok(error(
                StatusCode::NOT_FOUND,
                "no such plugin in the running config",
            ));
        };
        let Some(seq) = query.get("seq").and_then(|s| s.parse::<i64>().ok()) else {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "`seq` (a stored event's seq) is required",
            ));
        };
        let Some(detail) = self.store.event(seq).await? else {
            return Ok(error(StatusCode::NOT_FOUND, &format!("no event {seq}")));
        };
        let before = detail.envelope;
        let event = match PluginEvent::from_envelope_json(&before.to_string()) {
            Ok(e) => e,
            Err(e) => {
                let message = format!("event {seq}'s envelope cannot be given to a plugin: {e}");
                return Ok(error(StatusCode::CONFLICT, &message));
            }
        };
        let threads = Arc::clone(plugin.threads());
        let running = Arc::clone(&plugin);
        let call = threads
            .spawn(async move { running.dry_run(&event).await })
            .await;
        let Ok(call) = call else {
            return Ok(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the plugin call did not finish",
            ));
        };
        let verdict = serde_json::to_value(&call.outcome).unwrap_or_default();
        let mut changes = Vec::new();
        match &call.outcome {
            PluginOutcome::Pass(after) => {
                let after = serde_json::to_value(after).unwrap_or_default();
                overview::changes("", &before, &after, &mut changes);
            }
            PluginOutcome::Emit(events) => {
                for (i, after) in events.iter().enumerate() {
                    let after = serde_json::to_value(after).unwrap_or_default();
                    overview::changes(&format!("events[{i}]."), &before, &after, &mut changes);
                }
            }
            _ => {}
        }
        Ok(ok_json(&json!({
            "ok": true,
            "plugin": name,
            "seq": seq,
            "result": verdict,
            "changes": changes,
            "logs": call.logs,
            "elapsed_us": u64::try_from(call.elapsed.as_micros()).unwrap_or(u64::MAX),
            "fuel_used": call.fuel_used,
        })))
    }

    pub(super) async fn audit(&self, query: &Query) -> Result<Response<Body>, StoreError> {
        let parsed = query
            .before("an audit record id")
            .and_then(|before| Ok((before, query.limit(DEFAULT_LIMIT, MAX_LIMIT)?)));
        let (before, limit) = match parsed {
            Ok(v) => v,
            Err(e) => return Ok(bad_request(&e)),
        };
        let records = self.store.list_audit(before, limit).await?;
        let next = (records.len() == limit as usize)
            .then(|| records.last().map(|r| r.id))
            .flatten();
        Ok(ok_json(&json!({ "records": records, "next_before": next })))
    }

    /// Logs what an operator made happen and stores it in the audit trail; `audited`: the
    /// selection as stored, where it is shorter than the one logged.
    pub(super) async fn acted(&self, taken: AdminActionTaken<'_>, audited: Option<&str>) {
        let (actor, action, count) = (taken.actor, taken.action, taken.count);
        let selection = audited.unwrap_or(taken.selection);
        taken.emit();
        self.record_audit(actor, action, selection, count).await;
    }

    /// Stores who did what (a failure to store it is logged; the action stands, and its log
    /// line has the same facts).
    async fn record_audit(&self, actor: &str, action: &str, selection: &str, count: u64) {
        let record = AuditRecord {
            id: 0,
            at: crate::store::unix_ms(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            selection: selection.to_owned(),
            count,
        };
        if let Err(e) = self.store.record_audit(record).await {
            tracing::error!(error = %e, actor, action, "cannot store the audit record");
        }
    }
}
