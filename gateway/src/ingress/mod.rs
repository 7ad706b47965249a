//! Ingress: the HTTP side of the gateway. Owns the listeners, per-connection limits, the caps on
//! open connections and on request bodies in memory, who the client is (behind trusted
//! proxies), routing a request to its source's endpoint or to the service endpoints
//! (`/healthz`, `/readyz`, `/metrics`), the admin API and the console (on the webhook
//! listener, or only on the admin listener when `[admin] listen` is set), and turning every
//! outcome into the documented status and JSON body. Refusals are also kept, without secrets,
//! in the admin API's bounded list of rejected requests.
//!
//! It never parses provider formats itself (that is `providers`) and never writes SQL (that is
//! `store`); it never answers 200 before the store has committed.

mod body;
mod capacity;
mod client_addr;
mod listener;
mod reply;
mod webhook;

pub use listener::{ConnectionTimeouts, serve};

use crate::admin::{Admin, AdminState, Caller};
use crate::config::GatewayConfig;
use crate::metrics::events::UnmatchedRequest;
use crate::metrics::{Metrics, SourceMetrics};
use crate::plugins::{LoadedPlugin, PluginBoard};
use crate::providers::Source;
use crate::store::Store;
use arc_swap::ArcSwap;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use reply::Body;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Longest a request waits for the store before it is answered 503.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `/readyz` waits for its probe write.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// One source's endpoint: how to authenticate and normalize, and where to count.
#[derive(Debug)]
struct Endpoint {
    source: Source,
    metrics: SourceMetrics,
    /// The routes that take this source's events to a destination with ordering: an event
    /// one of them matches is stored with its ordering key, so that it holds its subject until
    /// it is routed (docs/ordering.md). Empty (the usual case): no event pays for that.
    ordered_routes: Vec<crate::config::RouteSettings>,
}

impl Endpoint {
    /// Whether an event of `event_type` from this source may go to an ordered destination.
    fn may_be_ordered(&self, event_type: &str) -> bool {
        self.ordered_routes
            .iter()
            .any(|r| r.matches(self.source.name(), event_type))
    }
}

/// The routes that may take events of `source` to a destination with ordering.
fn ordered_routes(config: &GatewayConfig, source: &str) -> Vec<crate::config::RouteSettings> {
    let ordered = |name: &String| {
        config
            .destinations
            .iter()
            .any(|d| &d.name == name && d.ordering.is_some())
    };
    config
        .routes
        .iter()
        .filter(|r| r.sources.is_empty() || r.sources.iter().any(|g| g.is_match(source)))
        .filter(|r| r.to.iter().any(ordered))
        .cloned()
        .collect()
}

/// The part of the request path a config reload replaces: sources and limits.
#[derive(Debug)]
struct Endpoints {
    by_path: HashMap<String, Endpoint>,
    max_body: u64,
    request_timeout: Duration,
    trusted_proxies: crate::config::TrustedProxies,
    admin: Option<Admin>,
}

impl Endpoints {
    fn new(
        config: &GatewayConfig,
        metrics: &Metrics,
        store: &Arc<dyn Store>,
        plugins: &Arc<PluginBoard>,
        loaded: &HashMap<String, Arc<LoadedPlugin>>,
        admin_state: &Arc<AdminState>,
    ) -> Self {
        let by_path = config
            .sources
            .iter()
            .map(|s| {
                let source = Source::new(s);
                let endpoint = Endpoint {
                    metrics: metrics.for_source(source.name(), source.catalogue()),
                    ordered_routes: ordered_routes(config, source.name()),
                    source,
                };
                (s.path.clone(), endpoint)
            })
            .collect();
        Self {
            by_path,
            max_body: config.server.max_body,
            request_timeout: config.server.request_timeout,
            trusted_proxies: config.server.trusted_proxies.clone(),
            admin: config.admin.as_ref().map(|a| {
                let (store, plugins) = (Arc::clone(store), Arc::clone(plugins));
                let state = Arc::clone(admin_state);
                Admin::new(store, plugins, metrics.clone(), config, a, state)
                    .with_plugins(loaded.clone())
            }),
        }
    }

    /// The endpoint a path belongs to, and the token segment for token-in-path sources.
    fn route<'p>(&self, path: &'p str) -> Option<(&Endpoint, Option<&'p str>)> {
        if let Some(e) = self.by_path.get(path) {
            return Some((e, None));
        }
        let (prefix, last) = path.rsplit_once('/')?;
        let e = self.by_path.get(prefix)?;
        (e.source.token_in_path() && !last.is_empty()).then_some((e, Some(last)))
    }
}

/// Everything the request path needs. The endpoints are swapped whole on a reload; a request
/// keeps the endpoints it started with.
#[derive(Debug)]
pub struct Gateway {
    endpoints: ArcSwap<Endpoints>,
    store: Arc<dyn Store>,
    metrics: Metrics,
    store_timeout: Duration,
    /// The running generation's plugins, whose health the admin API shows.
    plugins: Arc<PluginBoard>,
    /// `server.max_connections`, held by the listener's connections.
    connections: Arc<capacity::ConnectionCap>,
    /// `server.max_body_buffer`, shared by every request's body.
    bodies: capacity::BodyBudget,
    /// What the admin API keeps across generations (sessions signed out, refusals...).
    admin_state: Arc<AdminState>,
    /// Whether the admin API and the console have a listener of their own (decided at
    /// start: `[admin] listen`); the webhook listener then serves neither.
    admin_apart: bool,
}

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `server.listen`: webhooks and the service endpoints (and the admin API and console
    /// when they have no listener of their own).
    Webhooks,
    /// `admin.listen`: the admin API and the console only.
    Admin,
}

impl Gateway {
    pub fn new(
        config: &GatewayConfig,
        plugins: &HashMap<String, Arc<LoadedPlugin>>,
        store: Arc<dyn Store>,
        metrics: Metrics,
    ) -> Self {
        let board = Arc::new(PluginBoard::default());
        board.publish(plugins.values());
        let admin_state = Arc::new(AdminState::default());
        let endpoints = Endpoints::new(config, &metrics, &store, &board, plugins, &admin_state);
        let server = &config.server;
        Self {
            admin_state,
            admin_apart: config.admin.as_ref().is_some_and(|a| a.listen.is_some()),
            endpoints: ArcSwap::from_pointee(endpoints),
            store,
            store_timeout: STORE_TIMEOUT,
            plugins: board,
            connections: capacity::ConnectionCap::new(server.max_connections, metrics.clone()),
            bodies: capacity::BodyBudget::new(server.max_body_buffer, metrics.clone()),
            metrics,
        }
    }

    /// Takes the sources, limits and admin token of a new config generation, and shows its
    /// plugins in the admin API.
    pub fn reconfigure(
        &self,
        config: &GatewayConfig,
        plugins: &HashMap<String, Arc<LoadedPlugin>>,
    ) {
        self.connections.set_limit(config.server.max_connections);
        self.bodies.set_limit(config.server.max_body_buffer);
        self.plugins.publish(plugins.values());
        let endpoints = Endpoints::new(
            config,
            &self.metrics,
            &self.store,
            &self.plugins,
            plugins,
            &self.admin_state,
        );
        self.endpoints.store(Arc::new(endpoints));
    }

    /// What the admin API keeps across generations; the reloader records its results here.
    pub fn admin_state(&self) -> &Arc<AdminState> {
        &self.admin_state
    }

    /// The admin API or the console, if `path` is theirs and `surface` serves them.
    async fn admin_surface(
        &self,
        endpoints: &Endpoints,
        req: Request<Incoming>,
        peer: SocketAddr,
        path: &str,
    ) -> Response<Body> {
        let Some(admin) = &endpoints.admin else {
            self.unmatched("not_found");
            return reply::error(
                StatusCode::NOT_FOUND,
                "the admin API is not enabled ([admin] in the config)",
            );
        };
        if path == "/admin" || path.starts_with("/admin/") {
            // Behind a trusted proxy the audit names the client it forwarded; a forwarding
            // header that cannot be read leaves the TCP peer.
            let trusted = &endpoints.trusted_proxies;
            let client =
                client_addr::client_addr(peer.ip(), req.headers(), trusted).unwrap_or(peer.ip());
            let tls = client_addr::forwarded_https(peer.ip(), req.headers(), trusted);
            return admin.handle(req, Caller { client, tls }).await;
        }
        crate::console::serve(req.method(), path)
    }

    /// Answers one request. Never fails: every error becomes a documented response.
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        surface: Surface,
    ) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let endpoints = self.endpoints.load_full();
        let admin_path = ["/admin", "/console"]
            .iter()
            .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')));
        match (surface, admin_path) {
            (Surface::Admin, true) => {
                return self.admin_surface(&endpoints, req, peer, &path).await;
            }
            (Surface::Webhooks, true) if !self.admin_apart => {
                return self.admin_surface(&endpoints, req, peer, &path).await;
            }
            // The admin listener serves nothing else, and with one the webhook listener
            // shows no admin surface at all: the same 404 as any unknown path.
            (Surface::Admin, false) | (Surface::Webhooks, true) => {
                self.unmatched("not_found");
                self.admin_state
                    .record_rejection("-", peer.ip(), "no such path");
                return reply::error(StatusCode::NOT_FOUND, "no such path");
            }
            (Surface::Webhooks, false) => {}
        }
        match path.as_str() {
            "/healthz" | "/readyz" | "/metrics"
                if req.method() != Method::GET && req.method() != Method::HEAD =>
            {
                self.unmatched("method_not_allowed");
                reply::method_not_allowed("GET")
            }
            "/healthz" => reply::accepted(),
            "/readyz" => self.ready().await,
            "/metrics" => reply::metrics_text(self.metrics.render()),
            _ => match endpoints.route(&path) {
                Some((endpoint, suffix)) if req.method() == Method::POST => {
                    let limits = webhook::Limits {
                        max_body: endpoints.max_body,
                        request_timeout: endpoints.request_timeout,
                        trusted_proxies: &endpoints.trusted_proxies,
                    };
                    webhook::receive(self, endpoint, limits, req, peer.ip(), suffix).await
                }
                Some(_) => {
                    self.unmatched("method_not_allowed");
                    reply::method_not_allowed("POST")
                }
                None => {
                    self.unmatched("not_found");
                    self.admin_state
                        .record_rejection("-", peer.ip(), "no such path");
                    reply::error(StatusCode::NOT_FOUND, "no such path")
                }
            },
        }
    }

    async fn ready(&self) -> Response<Body> {
        match tokio::time::timeout(READY_TIMEOUT, self.store.check_writable()).await {
            Ok(Ok(())) => reply::accepted(),
            Ok(Err(e)) => reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("store not writable: {e}"),
            ),
            Err(_) => reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store not writable: timed out",
            ),
        }
    }

    fn unmatched(&self, reason: &'static str) {
        UnmatchedRequest {
            metrics: &self.metrics,
            reason,
        }
        .emit();
    }
}
