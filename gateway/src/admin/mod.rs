//! The admin API under `/admin/`: look at events, their plugin results and delivery attempts,
//! list dead letters and quarantined bodies, replay events through the current routes and
//! redrive dead letters; and the console's sessions and overview (`console/` serves the pages,
//! which use only this API).
//!
//! Every request but `GET /admin/openapi.yaml` (this API's description, which names no secret)
//! and the sign-in needs an admin token: `Authorization: Bearer <token>` or the session cookie
//! a sign-in set (`auth`, `session`); without one the answer is 401 and nothing else is
//! revealed. Each token has a name and a role: a `viewer` reads, an `operator` also replays and
//! redrives; every state change is a POST, refused 403 for a viewer, and, when authenticated by
//! the cookie, refused 403 without the session's CSRF value in `X-CSRF-Token`. Answers are
//! JSON. Every request is counted by action and result; refusals and every replay or redrive
//! are logged with the client's address and the token's name, and replays and redrives are
//! stored in the audit trail (`GET /admin/audit`).
//!
//! The admin API reads and marks work in the store; the workers do the work, so a replay or a
//! redrive answers at once and never runs plugins or deliveries on the request.
//!
//! Endpoints (`docs/admin-api.md` lists them, `docs/openapi.yaml` describes them exactly; `routes` says
//! which method and parameters each takes):
//! - `GET  /admin/events?source=&type=&status=&since=&until=&before=&limit=`
//! - `GET  /admin/events/{seq}`
//! - `POST /admin/events/{seq}/replay`
//! - `POST /admin/replay?source=&type=&status=&since=&until=&before=&limit=&all=&dry_run=` (a
//!   filter that selects every stored event needs `all=true`)
//! - `GET  /admin/dead-letters?limit=`
//! - `POST /admin/dead-letters/redrive?dry_run=`
//! - `POST /admin/deliveries/{id}/redrive`, `POST /admin/route-runs/{id}/redrive`
//! - `GET  /admin/blocked-subjects?limit=`, `POST /admin/deliveries/{id}/skip` (ordered
//!   destinations: the subjects waiting behind a failed delivery, and letting one go on)
//! - `GET  /admin/plugins` (each plugin's health)
//! - `GET  /admin/quarantine?source=&before=&limit=`, `GET /admin/quarantine/{id}`
//! - `POST /admin/session` (sign in), `GET /admin/session`, `POST /admin/session/end`
//! - `GET  /admin/overview`, `GET /admin/routes`, `GET /admin/audit?before=&limit=`,
//!   `GET /admin/rejected`
//! - `GET  /admin/openapi.yaml` (no token needed)

mod auth;
mod overview;
mod query;
mod reads;
mod redrive;
mod routes;
mod session;
mod sign_in;
mod state;

pub use state::{AdminState, HISTORY_EVERY, HistoryPoint, REJECTED_KEPT, Rejection, ReloadRecord};

/// Adds a point to the overview's charts every [`HISTORY_EVERY`] until `shutdown`.
pub async fn chart_history(
    state: Arc<AdminState>,
    metrics: Metrics,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(HISTORY_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                state.record_history(overview::history_point(&metrics, crate::store::unix_ms()));
            }
        }
    }
}

use crate::config::{AdminSettings, GatewayConfig};
use crate::metrics::Metrics;
use crate::metrics::flow_events::{AdminActionTaken, AdminRequestHandled};
use crate::plugins::{LoadedPlugin, PluginBoard};
use crate::store::{EventFilter, RedriveSelection, Store, StoreError};
use auth::{TokenBook, Via};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use query::{Query, QueryError};
use routes::Endpoint;
use serde_json::json;
use session::SessionKeys;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Page size when `limit` is not given, and the largest allowed.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// Most events one filtered replay may mark.
const MAX_REPLAY: u32 = 10_000;

type Body = Full<Bytes>;

/// The admin API of one config generation.
#[derive(Debug)]
pub struct Admin {
    store: Arc<dyn Store>,
    plugins: Arc<PluginBoard>,
    metrics: Metrics,
    tokens: TokenBook,
    sessions: SessionKeys,
    /// Kept across generations: sign-outs, refusals, rate samples, the last reload.
    state: Arc<AdminState>,
    /// The running config's sources, routes and destinations (`GET /admin/routes`).
    routes: serde_json::Value,
    /// This generation's plugins, for dry runs.
    loaded: HashMap<String, Arc<LoadedPlugin>>,
}

/// Where a request came from: the client (behind trusted proxies, the one they name) and
/// whether it reached a trusted proxy over TLS (the session cookie is then `Secure`).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub client: IpAddr,
    pub tls: bool,
}

impl Admin {
    pub fn new(
        store: Arc<dyn Store>,
        plugins: Arc<PluginBoard>,
        metrics: Metrics,
        config: &GatewayConfig,
        settings: &AdminSettings,
        state: Arc<AdminState>,
    ) -> Self {
        let tokens = TokenBook::new(settings);
        let sessions = SessionKeys::new(&tokens.key_material(), settings.session_ttl);
        Self {
            store,
            plugins,
            metrics,
            tokens,
            sessions,
            state,
            routes: overview::routes_view(config),
            loaded: HashMap::new(),
        }
    }

    /// The generation's loaded plugins, which `POST /admin/plugins/{name}/dry-run` runs.
    pub fn with_plugins(mut self, loaded: HashMap<String, Arc<LoadedPlugin>>) -> Self {
        self.loaded = loaded;
        self
    }

    /// Answers one admin request. Never fails: every error is a JSON answer.
    pub async fn handle(&self, req: Request<Incoming>, caller: Caller) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let action = action_of(req.method(), &path);
        let client = caller.client;
        let res = self.answer(req, &path, caller).await;
        if res.status() == StatusCode::UNAUTHORIZED {
            self.state
                .record_rejection("admin", client, "missing or wrong admin token or session");
        }
        AdminRequestHandled {
            metrics: &self.metrics,
            action,
            status: res.status().as_u16(),
            client,
            path: &path,
        }
        .emit();
        res
    }

    async fn answer(&self, req: Request<Incoming>, path: &str, caller: Caller) -> Response<Body> {
        let segments: Vec<&str> = path.split('/').skip(2).collect();
        let route = routes::resolve(req.method(), &segments);
        let now = crate::store::unix_ms();
        // The description of the API and the sign-in are public; everything else, even
        // whether a path exists, is for token holders only.
        let public = route.as_ref().is_some_and(|r| r.endpoint.is_public());
        let principal = auth::authenticate(req.headers(), &self.tokens, &self.sessions, now)
            .filter(|p| match &p.via {
                Via::Session(claims) => !self.state.revoked.is_revoked(claims),
                Via::Bearer => true,
            });
        let principal = match (principal, public) {
            (Some(p), _) => Some(p),
            (None, true) => None,
            (None, false) => {
                let mut res = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"gateway-admin\""),
                );
                return res;
            }
        };
        let Some(route) = route else {
            return error(StatusCode::NOT_FOUND, "no such admin endpoint");
        };
        if *req.method() != route.method {
            return method_not_allowed(req.method(), route.allow());
        }
        if let (Some(p), true) = (&principal, route.method == Method::POST)
            && let Some(refusal) = self.refuse_change(p, &req, route.endpoint)
        {
            return refusal;
        }
        let query = match Query::parse(req.uri().query())
            .and_then(|q| q.only(route.params, route.pattern).map(|()| q))
        {
            Ok(q) => q,
            Err(e) => return bad_request(&e),
        };
        // Only the public endpoints run without a principal.
        let who = principal.as_ref();
        let actor = who.map_or("", |p| p.name.as_str());
        let client = caller.client;
        let result = match route.endpoint {
            Endpoint::OpenApi => Ok(openapi_yaml()),
            Endpoint::SignIn => Ok(self.sign_in(req, caller, now).await),
            Endpoint::Session => Ok(who.map_or_else(no_session, |p| self.session_answer(p))),
            Endpoint::SignOut => Ok(self.sign_out(who, caller, now)),
            Endpoint::Overview => self.overview(now).await,
            Endpoint::Routes => Ok(ok_json(&self.routes)),
            Endpoint::Audit => self.audit(&query).await,
            Endpoint::Rejected => Ok(ok_json(&json!({
                "kept": REJECTED_KEPT,
                "rejected": self.state.rejections(),
            }))),
            Endpoint::PluginDryRun(name) => self.plugin_dry_run(name, &query).await,
            Endpoint::ListEvents => self.list_events(&query).await,
            Endpoint::Event(seq) => self.event(seq).await,
            Endpoint::ReplayOne(seq) => self.replay_one(seq, client, actor).await,
            Endpoint::ReplayFiltered => self.replay_filtered(&query, client, actor).await,
            Endpoint::DeadLetters => self.dead_letters(&query).await,
            Endpoint::BlockedSubjects => self.blocked_subjects(&query).await,
            Endpoint::SkipDelivery(id) => match parse_id(id) {
                Ok(id) => self.skip(id, client, actor).await,
                Err(res) => Ok(*res),
            },
            Endpoint::Plugins => Ok(self.plugins()),
            Endpoint::Quarantine => self.quarantine(&query).await,
            Endpoint::Quarantined(id) => self.quarantined(id).await,
            Endpoint::RedriveAll => self.redrive_dead(&query, client, actor).await,
            Endpoint::DeadLetterGroups => self.dead_letter_groups().await,
            Endpoint::RedriveDelivery(id) => match parse_id(id) {
                Ok(id) => {
                    let selection = RedriveSelection::Deliveries(vec![id]);
                    self.redrive(selection, client, actor).await
                }
                Err(res) => Ok(*res),
            },
            Endpoint::RedriveRouteRun(id) => match parse_id(id) {
                Ok(id) => {
                    let selection = RedriveSelection::RouteRuns(vec![id]);
                    self.redrive(selection, client, actor).await
                }
                Err(res) => Ok(*res),
            },
        };
        result.unwrap_or_else(|e| {
            tracing::error!(error = %e, "admin request failed in the store");
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        })
    }

    async fn list_events(&self, query: &Query) -> Result<Response<Body>, StoreError> {
        let (filter, limit) = match filter_and_limit(query, DEFAULT_LIMIT, MAX_LIMIT) {
            Ok(v) => v,
            Err(e) => return Ok(bad_request(&e)),
        };
        let events = self.store.list_events(filter, limit).await?;
        // A full page may have more behind it: `before` the last seq fetches the next one.
        let next = (events.len() == limit as usize)
            .then(|| events.last().map(|e| e.seq))
            .flatten();
        Ok(ok_json(&json!({ "events": events, "next_before": next })))
    }

    async fn event(&self, seq: &str) -> Result<Response<Body>, StoreError> {
        let seq = match parse_id(seq) {
            Ok(s) => s,
            Err(res) => return Ok(*res),
        };
        Ok(match self.store.event(seq).await? {
            Some(detail) => ok_json(&detail),
            None => error(StatusCode::NOT_FOUND, &format!("no event {seq}")),
        })
    }

    async fn replay_one(
        &self,
        seq: &str,
        client: IpAddr,
        actor: &str,
    ) -> Result<Response<Body>, StoreError> {
        let seq = match parse_id(seq) {
            Ok(s) => s,
            Err(res) => return Ok(*res),
        };
        let Some(detail) = self.store.event(seq).await? else {
            return Ok(error(StatusCode::NOT_FOUND, &format!("no event {seq}")));
        };
        let filter = EventFilter {
            seq: Some(seq),
            ..EventFilter::default()
        };
        let marked = self.store.request_replay(filter, 1).await?;
        if marked == 0 {
            return Ok(error(
                StatusCode::CONFLICT,
                &format!(
                    "event {seq} is {} and already on its way through the routes",
                    detail.summary.status
                ),
            ));
        }
        let selection = format!("event {seq}");
        Ok(self.replayed(&selection, marked, client, actor).await)
    }

    /// Logs and audits a replay of `marked` events, and answers it.
    async fn replayed(
        &self,
        selection: &str,
        marked: u64,
        client: IpAddr,
        actor: &str,
    ) -> Response<Body> {
        self.acted(
            AdminActionTaken {
                action: "replay",
                selection,
                count: marked,
                client,
                actor,
            },
            None,
        )
        .await;
        accepted_json(&json!({ "ok": true, "replayed": marked }))
    }

    async fn replay_filtered(
        &self,
        query: &Query,
        client: IpAddr,
        actor: &str,
    ) -> Result<Response<Body>, StoreError> {
        let parsed = filter_and_limit(query, MAX_REPLAY, MAX_REPLAY).and_then(|(filter, limit)| {
            Ok((filter, limit, query.flag("all")?, query.flag("dry_run")?))
        });
        let (filter, limit, all, dry_run) = match parsed {
            Ok(v) => v,
            Err(e) => return Ok(bad_request(&e)),
        };
        if !all && let Some(refusal) = self.selects_everything(&filter).await? {
            return Ok(bad_request(&refusal));
        }
        if dry_run {
            let count = self.store.count_replay(filter, limit).await?;
            return Ok(ok_json(
                &json!({ "ok": true, "dry_run": true, "would_replay": count }),
            ));
        }
        let selection = describe_filter(&filter, limit);
        let marked = self.store.request_replay(filter, limit).await?;
        Ok(self.replayed(&selection, marked, client, actor).await)
    }

    /// Why a replay with `filter` would select every stored event, if it would: a replay of
    /// everything needs `all=true`. `source`, `type` and `status` name a subset, whatever is
    /// stored. A time or seq bound narrows only when it excludes a stored event: `since` after
    /// the oldest event's arrival, `until` at or before the newest's, `before` at or below the
    /// newest seq. `since=0` or `before=<huge>` exclude nothing and are refused like no filter
    /// at all (with nothing stored there is nothing to replay, and any bound will do).
    async fn selects_everything(
        &self,
        filter: &EventFilter,
    ) -> Result<Option<QueryError>, StoreError> {
        let EventFilter {
            seq,
            source,
            event_type,
            id,
            subject,
            status,
            since_ms,
            until_ms,
            before_seq,
        } = filter;
        // A type glob of only `*` matches every stored type: no filter.
        let by_type = event_type
            .as_deref()
            .is_some_and(|t| t.chars().any(|c| c != '*'));
        if seq.is_some()
            || source.is_some()
            || by_type
            || id.is_some()
            || subject.is_some()
            || status.is_some()
        {
            return Ok(None);
        }
        let bounds: Vec<String> = [
            since_ms.map(|v| format!("since={v}")),
            until_ms.map(|v| format!("until={v}")),
            before_seq.map(|v| format!("before={v}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if bounds.is_empty() {
            return Ok(Some(QueryError(
                "a replay needs a filter (source, type, status, since, until, before) or all=true"
                    .into(),
            )));
        }
        let Some(span) = self.store.stored_span().await? else {
            return Ok(None);
        };
        let excludes = since_ms.is_some_and(|t| t > span.oldest_received_at)
            || until_ms.is_some_and(|t| t <= span.newest_received_at)
            || before_seq.is_some_and(|s| s <= span.newest_seq);
        Ok((!excludes).then(|| {
            QueryError(format!(
                "{} excludes no stored event (received {} to {} unix ms, seq {} to {}), so it \
                 would replay every event: narrow it, or pass all=true to replay everything",
                bounds.join(" and "),
                span.oldest_received_at,
                span.newest_received_at,
                span.oldest_seq,
                span.newest_seq
            ))
        }))
    }

    async fn dead_letters(&self, query: &Query) -> Result<Response<Body>, StoreError> {
        let limit = match query.limit(DEFAULT_LIMIT, MAX_LIMIT) {
            Ok(l) => l,
            Err(e) => return Ok(bad_request(&e)),
        };
        let (deliveries, route_runs) = self.store.dead_letters(limit).await?;
        Ok(ok_json(
            &json!({ "deliveries": deliveries, "route_runs": route_runs }),
        ))
    }

    async fn blocked_subjects(&self, query: &Query) -> Result<Response<Body>, StoreError> {
        let limit = match query.limit(DEFAULT_LIMIT, MAX_LIMIT) {
            Ok(l) => l,
            Err(e) => return Ok(bad_request(&e)),
        };
        let blocked = self.store.blocked_subjects(limit).await?;
        Ok(ok_json(&json!({ "blocked_subjects": blocked })))
    }

    async fn skip(
        &self,
        id: i64,
        client: IpAddr,
        actor: &str,
    ) -> Result<Response<Body>, StoreError> {
        let n = self.store.skip_blocking(id).await?;
        if n == 0 {
            return Ok(error(
                StatusCode::NOT_FOUND,
                "no delivery with this id holds an ordered subject",
            ));
        }
        let selection = format!("delivery {id}");
        self.acted(
            AdminActionTaken {
                action: "skip",
                selection: &selection,
                count: n,
                client,
                actor,
            },
            None,
        )
        .await;
        Ok(accepted_json(&json!({ "ok": true, "skipped": n })))
    }

    async fn quarantine(&self, query: &Query) -> Result<Response<Body>, StoreError> {
        let parsed = query
            .before("a quarantine id")
            .and_then(|before| Ok((before, query.limit(DEFAULT_LIMIT, MAX_LIMIT)?)));
        let (before, limit) = match parsed {
            Ok(v) => v,
            Err(e) => return Ok(bad_request(&e)),
        };
        let source = query.get("source").map(str::to_owned);
        let entries = self.store.list_quarantine(source, before, limit).await?;
        let next = (entries.len() == limit as usize)
            .then(|| entries.last().map(|e| e.id))
            .flatten();
        Ok(ok_json(
            &json!({ "quarantine": entries, "next_before": next }),
        ))
    }

    async fn quarantined(&self, id: &str) -> Result<Response<Body>, StoreError> {
        let id = match parse_id(id) {
            Ok(id) => id,
            Err(res) => return Ok(*res),
        };
        let found = self
            .store
            .list_quarantine(None, id.checked_add(1), 1)
            .await?
            .into_iter()
            .find(|e| e.id == id);
        Ok(match found {
            Some(entry) => ok_json(&entry),
            None => error(StatusCode::NOT_FOUND, &format!("no quarantined body {id}")),
        })
    }

    fn plugins(&self) -> Response<Body> {
        ok_json(&json!({ "plugins": self.plugin_list() }))
    }

    fn plugin_list(&self) -> serde_json::Value {
        let plugins: Vec<serde_json::Value> = self
            .plugins
            .reports()
            .into_iter()
            .map(|(name, h)| {
                json!({
                    "name": name,
                    "healthy": h.healthy,
                    "consecutive_failures": h.consecutive_failures,
                    "unhealthy_after": h.unhealthy_after,
                    "unhealthy_since": h.unhealthy_since,
                    "last_failure": h.last_failure,
                })
            })
            .collect();
        serde_json::Value::from(plugins)
    }

    pub(super) async fn redrive(
        &self,
        selection: RedriveSelection,
        client: IpAddr,
        actor: &str,
    ) -> Result<Response<Body>, StoreError> {
        let single = !matches!(selection, RedriveSelection::All);
        let described = match &selection {
            RedriveSelection::All => "every dead letter".to_owned(),
            RedriveSelection::Deliveries(ids) => format!("delivery {ids:?}"),
            RedriveSelection::RouteRuns(ids) => format!("route run {ids:?}"),
            RedriveSelection::WaitingRouteRuns => "waiting route runs".to_owned(),
        };
        let n = self.store.redrive(selection).await?;
        if single && n == 0 {
            return Ok(error(StatusCode::NOT_FOUND, "no such dead letter"));
        }
        self.acted(
            AdminActionTaken {
                action: "redrive",
                selection: &described,
                count: n,
                client,
                actor,
            },
            None,
        )
        .await;
        Ok(accepted_json(&json!({ "ok": true, "redriven": n })))
    }

    /// How many dead letters a redrive of all would send back to work now.
    pub(super) async fn redrive_dry_run(&self) -> Result<Response<Body>, StoreError> {
        let n = self.store.backlog().await?.dead_letters;
        Ok(ok_json(
            &json!({ "ok": true, "dry_run": true, "would_redrive": n }),
        ))
    }
}

/// The `action` label of a request: what it would do if it were allowed.
fn action_of(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.split('/').skip(2).collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["events", _, "replay"] | ["replay"]) => "replay",
        (&Method::POST, [.., "redrive"]) => "redrive",
        (&Method::POST, ["deliveries", _, "skip"]) => "skip",
        (&Method::GET | &Method::HEAD, _) => "read",
        _ => "other",
    }
}

fn filter_and_limit(
    query: &Query,
    default_limit: u32,
    max_limit: u32,
) -> Result<(EventFilter, u32), QueryError> {
    Ok((query.filter()?, query.limit(default_limit, max_limit)?))
}

/// A replay's filter as the audit trail shows it: only the parts given.
fn describe_filter(filter: &EventFilter, limit: u32) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &filter.source {
        parts.push(format!("source={s}"));
    }
    if let Some(t) = &filter.event_type {
        parts.push(format!("type={t}"));
    }
    if let Some(s) = filter.status {
        parts.push(format!("status={}", s.as_str()));
    }
    if let Some(t) = filter.since_ms {
        parts.push(format!("since={t}"));
    }
    if let Some(t) = filter.until_ms {
        parts.push(format!("until={t}"));
    }
    if let Some(b) = filter.before_seq {
        parts.push(format!("before={b}"));
    }
    parts.push(format!("limit={limit}"));
    parts.join(" ")
}

/// 401 for `GET /admin/session` without a valid session (cannot happen: it needs one).
fn no_session() -> Response<Body> {
    error(StatusCode::UNAUTHORIZED, "not signed in")
}

/// Answers about sessions and live numbers are never cached.
fn no_store(res: &mut Response<Body>) {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A positive integer id, or the 404 to answer.
fn parse_id(text: &str) -> Result<i64, Box<Response<Body>>> {
    text.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            &format!("`{text}` is not an id"),
        ))
    })
}

/// This API's OpenAPI description (`docs/openapi.yaml`), built into the binary so it always
/// describes the code it ships with.
const OPENAPI_YAML: &str = include_str!("../../../docs/openapi.yaml");

fn openapi_yaml() -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(OPENAPI_YAML.as_bytes())));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    res
}

/// 405 with `Allow` (RFC 9110, 15.5.6): every admin path answers exactly one method.
fn method_not_allowed(used: &Method, allowed: &str) -> Response<Body> {
    let mut res = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{used} is not allowed here; use {allowed}"),
    );
    if let Ok(allow) = HeaderValue::from_str(allowed) {
        res.headers_mut().insert(header::ALLOW, allow);
    }
    res
}

fn respond(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Data about events is never kept by a browser or a proxy.
    no_store(&mut res);
    res
}

fn ok_json<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(body) => respond(StatusCode::OK, body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// 202: the work is marked; the workers pick it up.
fn accepted_json(value: &serde_json::Value) -> Response<Body> {
    respond(StatusCode::ACCEPTED, value.to_string())
}

/// `{"ok":false,"error":...}`, `ok` first like every other error answer of the gateway.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let message = serde_json::Value::from(message);
    respond(status, format!(r#"{{"ok":false,"error":{message}}}"#))
}

fn bad_request(e: &QueryError) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, &e.0)
}
