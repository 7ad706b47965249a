//! Dead letters by group and their redrive: the groups by destination and reason with the
//! money stuck in each (`GET /admin/dead-letters/groups`), and the redrive of every dead
//! delivery a filter selects (`POST /admin/dead-letters/redrive` with `destination`, `route`,
//! `reason`, `source`, `type` (a glob too), `since`, `until`), or with `stage=plugin` of every
//! dead plugin stage (route run) one selects.
//!
//! A filtered redrive first counts (`dry_run=true`), which also answers `through`, the highest
//! id counted; the redrive then takes only dead deliveries up to that id, so it sends back
//! exactly what the operator confirmed and not what died since. With `after` it does one page
//! of [`PAGE`] ids from there and says where to resume (the console calls it page after page
//! and shows the progress); without, it walks every page itself. Each page is one writer
//! command, audited with its token's name. Never runs plugins or deliveries on the request.

use super::query::{Query, QueryError};
use super::{Admin, Body, accepted_json, bad_request, ok_json};
use crate::metrics::flow_events::AdminActionTaken;
use crate::store::{DeadFilter, RedriveSelection, StoreError};
use http::Response;
use serde_json::json;
use std::net::IpAddr;

/// Dead deliveries sent back to work per writer command (a page).
pub(super) const PAGE: u32 = 1000;

/// A redrive request's filter and its page bounds.
struct Filtered {
    filter: DeadFilter,
    through: Option<i64>,
    after: Option<i64>,
}

fn filtered(query: &Query) -> Result<Option<Filtered>, QueryError> {
    let int = |key: &str| {
        query
            .get(key)
            .map(|t| {
                t.parse::<i64>()
                    .map_err(|_| QueryError(format!("`{key}` must be a dead letter id")))
            })
            .transpose()
    };
    let text = |key: &str| query.get(key).map(str::to_owned);
    let plugin_stages = match query.get("stage") {
        None | Some("delivery") => false,
        Some("plugin") => true,
        Some(_) => {
            return Err(QueryError(
                "`stage` must be `delivery` or `plugin`".to_owned(),
            ));
        }
    };
    let filter = DeadFilter {
        plugin_stages,
        destination: text("destination"),
        route: text("route"),
        reason: text("reason"),
        source: text("source"),
        event_type: text("type"),
        since_ms: query.time("since")?,
        until_ms: query.time("until")?,
    };
    let (through, after) = (int("through")?, int("after")?);
    if filter.is_empty() && through.is_none() && after.is_none() {
        return Ok(None);
    }
    Ok(Some(Filtered {
        filter,
        through,
        after,
    }))
}

/// The filter as the audit trail and the log show it.
fn described(filter: &DeadFilter) -> String {
    let DeadFilter {
        plugin_stages,
        destination,
        route,
        reason,
        source,
        event_type,
        since_ms,
        until_ms,
    } = filter;
    let parts: Vec<String> = [
        destination.as_ref().map(|v| format!("destination={v}")),
        route.as_ref().map(|v| format!("route={v}")),
        reason.as_ref().map(|v| format!("reason={v}")),
        source.as_ref().map(|v| format!("source={v}")),
        event_type.as_ref().map(|v| format!("type={v}")),
        since_ms.map(|v| format!("since={v}")),
        until_ms.map(|v| format!("until={v}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let (one, many) = if *plugin_stages {
        ("dead plugin stage", "dead plugin stages")
    } else {
        ("dead delivery", "dead deliveries")
    };
    if parts.is_empty() {
        format!("every {one}")
    } else {
        format!("{many} {}", parts.join(" "))
    }
}

impl Admin {
    pub(super) async fn dead_letter_groups(&self) -> Result<Response<Body>, StoreError> {
        let groups = self.store.dead_letter_groups().await?;
        Ok(ok_json(&json!({ "groups": groups })))
    }

    /// `POST /admin/dead-letters/redrive`: a filtered redrive, or every dead letter (dead
    /// deliveries and dead plugin stages) when no filter is given.
    pub(super) async fn redrive_dead(
        &self,
        query: &Query,
        client: IpAddr,
        actor: &str,
    ) -> Result<Response<Body>, StoreError> {
        let (dry_run, request) = match query
            .flag("dry_run")
            .and_then(|d| Ok((d, filtered(query)?)))
        {
            Ok(parsed) => parsed,
            Err(e) => return Ok(bad_request(&e)),
        };
        let Some(Filtered {
            filter,
            through,
            after,
        }) = request
        else {
            return if dry_run {
                self.redrive_dry_run().await
            } else {
                self.redrive(RedriveSelection::All, client, actor).await
            };
        };
        if dry_run {
            let (count, highest) = self.store.count_dead(filter).await?;
            return Ok(ok_json(&json!({
                "ok": true, "dry_run": true, "would_redrive": count, "through": highest,
            })));
        }
        let through = match through {
            Some(t) => t,
            None => match self.store.count_dead(filter.clone()).await?.1 {
                Some(highest) => highest,
                None => {
                    return Ok(accepted_json(
                        &json!({ "ok": true, "redriven": 0, "resume_after": null }),
                    ));
                }
            },
        };
        let mut from = after.unwrap_or(0);
        let mut redriven = 0;
        let resume_after = loop {
            let ids = self
                .store
                .dead_page(filter.clone(), from, through, PAGE)
                .await?;
            let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
                break None;
            };
            let full = ids.len() == usize::try_from(PAGE).unwrap_or(usize::MAX);
            let selection = if filter.plugin_stages {
                RedriveSelection::RouteRuns(ids)
            } else {
                RedriveSelection::Deliveries(ids)
            };
            let n = self.store.redrive(selection).await?;
            redriven += n;
            let selection = format!("{} (ids {first}..={last})", described(&filter));
            self.acted(
                AdminActionTaken {
                    action: "redrive",
                    selection: &selection,
                    count: n,
                    client,
                    actor,
                },
                None,
            )
            .await;
            from = last;
            match (full, after) {
                (false, _) => break None,
                // One page per request when the caller pages itself.
                (true, Some(_)) => break Some(last),
                (true, None) => {}
            }
        };
        Ok(accepted_json(&json!({
            "ok": true, "redriven": redriven, "through": through, "resume_after": resume_after,
        })))
    }
}
