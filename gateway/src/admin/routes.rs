//! The admin API's endpoints: which one a path names, the one method it answers and the query
//! parameters it takes (the table `docs/openapi.yaml` describes). Knows nothing of tokens, the
//! store or parameter values; a path it does not know is nobody's, so it is 404 whatever the
//! method, and a known path with another method is 405. The one path with two methods is
//! `/admin/session` (GET: who am I; POST: sign in).

use http::Method;

/// What a request asks for; ids and seqs are still the path's text (`parse_id` decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint<'p> {
    OpenApi,
    ListEvents,
    Event(&'p str),
    ReplayOne(&'p str),
    ReplayFiltered,
    DeadLetters,
    DeadLetterGroups,
    RedriveAll,
    RedriveDelivery(&'p str),
    RedriveRouteRun(&'p str),
    BlockedSubjects,
    SkipDelivery(&'p str),
    Plugins,
    Quarantine,
    Quarantined(&'p str),
    Session,
    SignIn,
    SignOut,
    Overview,
    Routes,
    Audit,
    Rejected,
    PluginDryRun(&'p str),
}

impl Endpoint<'_> {
    /// Answered without a token: the API's description, and the sign-in (the token is in
    /// its body).
    pub(super) fn is_public(self) -> bool {
        matches!(self, Self::OpenApi | Self::SignIn)
    }
}

/// An endpoint with the method it answers and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Route<'p> {
    pub(super) endpoint: Endpoint<'p>,
    pub(super) method: Method,
    /// The path as documented, for error messages.
    pub(super) pattern: &'static str,
    /// Every query parameter it takes; any other is refused, never ignored.
    pub(super) params: &'static [&'static str],
}

const FILTER: &[&str] = &[
    "source", "type", "id", "subject", "status", "since", "until", "before", "limit",
];
const REPLAY: &[&str] = &[
    "source", "type", "id", "subject", "status", "since", "until", "before", "limit", "all",
    "dry_run",
];
const REDRIVE: &[&str] = &[
    "stage",
    "destination",
    "route",
    "reason",
    "source",
    "type",
    "since",
    "until",
    "dry_run",
    "through",
    "after",
];
const PAGE: &[&str] = &["before", "limit"];
const SEQ: &[&str] = &["seq"];
const QUARANTINE: &[&str] = &["source", "before", "limit"];
const LIMIT: &[&str] = &["limit"];
const NONE: &[&str] = &[];

impl Route<'_> {
    /// The `Allow` header of a 405 on this path: every method the path answers.
    pub(super) fn allow(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Session | Endpoint::SignIn => "GET, POST",
            // Every route answers GET or POST.
            _ if self.method == Method::POST => "POST",
            _ => "GET",
        }
    }
}

/// The route of `segments` (the path after `/admin/`, split at `/`), if it is one.
pub(super) fn resolve<'p>(method: &Method, segments: &[&'p str]) -> Option<Route<'p>> {
    let (endpoint, method, pattern, params) = match *segments {
        ["session"] if *method == Method::POST => {
            (Endpoint::SignIn, Method::POST, "/admin/session", NONE)
        }
        ["session"] => (Endpoint::Session, Method::GET, "/admin/session", NONE),
        ["session", "end"] => (Endpoint::SignOut, Method::POST, "/admin/session/end", NONE),
        ["overview"] => (Endpoint::Overview, Method::GET, "/admin/overview", NONE),
        ["routes"] => (Endpoint::Routes, Method::GET, "/admin/routes", NONE),
        ["audit"] => (Endpoint::Audit, Method::GET, "/admin/audit", PAGE),
        ["rejected"] => (Endpoint::Rejected, Method::GET, "/admin/rejected", NONE),
        ["openapi.yaml"] => (Endpoint::OpenApi, Method::GET, "/admin/openapi.yaml", NONE),
        ["events"] => (Endpoint::ListEvents, Method::GET, "/admin/events", FILTER),
        ["events", seq] => (
            Endpoint::Event(seq),
            Method::GET,
            "/admin/events/{seq}",
            NONE,
        ),
        ["events", seq, "replay"] => (
            Endpoint::ReplayOne(seq),
            Method::POST,
            "/admin/events/{seq}/replay",
            NONE,
        ),
        ["replay"] => (
            Endpoint::ReplayFiltered,
            Method::POST,
            "/admin/replay",
            REPLAY,
        ),
        ["dead-letters"] => (
            Endpoint::DeadLetters,
            Method::GET,
            "/admin/dead-letters",
            LIMIT,
        ),
        ["dead-letters", "groups"] => (
            Endpoint::DeadLetterGroups,
            Method::GET,
            "/admin/dead-letters/groups",
            NONE,
        ),
        ["dead-letters", "redrive"] => (
            Endpoint::RedriveAll,
            Method::POST,
            "/admin/dead-letters/redrive",
            REDRIVE,
        ),
        ["deliveries", id, "redrive"] => (
            Endpoint::RedriveDelivery(id),
            Method::POST,
            "/admin/deliveries/{id}/redrive",
            NONE,
        ),
        ["route-runs", id, "redrive"] => (
            Endpoint::RedriveRouteRun(id),
            Method::POST,
            "/admin/route-runs/{id}/redrive",
            NONE,
        ),
        ["blocked-subjects"] => (
            Endpoint::BlockedSubjects,
            Method::GET,
            "/admin/blocked-subjects",
            LIMIT,
        ),
        ["deliveries", id, "skip"] => (
            Endpoint::SkipDelivery(id),
            Method::POST,
            "/admin/deliveries/{id}/skip",
            NONE,
        ),
        ["plugins"] => (Endpoint::Plugins, Method::GET, "/admin/plugins", NONE),
        ["plugins", name, "dry-run"] => (
            Endpoint::PluginDryRun(name),
            Method::POST,
            "/admin/plugins/{name}/dry-run",
            SEQ,
        ),
        ["quarantine"] => (
            Endpoint::Quarantine,
            Method::GET,
            "/admin/quarantine",
            QUARANTINE,
        ),
        ["quarantine", id] => (
            Endpoint::Quarantined(id),
            Method::GET,
            "/admin/quarantine/{id}",
            NONE,
        ),
        _ => return None,
    };
    Some(Route {
        endpoint,
        method,
        pattern,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Option<Route<'_>> {
        route_for(&Method::GET, path)
    }

    fn route_for<'p>(method: &Method, path: &'p str) -> Option<Route<'p>> {
        let segments: Vec<&str> = path.split('/').skip(2).collect();
        resolve(method, &segments)
    }

    /// One path of each route (`/admin/session` twice: GET and POST).
    const EVERY_ROUTE: [(&str, Method); 23] = [
        ("/admin/openapi.yaml", Method::GET),
        ("/admin/events", Method::GET),
        ("/admin/events/1", Method::GET),
        ("/admin/events/1/replay", Method::POST),
        ("/admin/replay", Method::POST),
        ("/admin/dead-letters", Method::GET),
        ("/admin/dead-letters/groups", Method::GET),
        ("/admin/dead-letters/redrive", Method::POST),
        ("/admin/deliveries/1/redrive", Method::POST),
        ("/admin/route-runs/1/redrive", Method::POST),
        ("/admin/blocked-subjects", Method::GET),
        ("/admin/deliveries/1/skip", Method::POST),
        ("/admin/plugins", Method::GET),
        ("/admin/quarantine", Method::GET),
        ("/admin/quarantine/1", Method::GET),
        ("/admin/session", Method::GET),
        ("/admin/session", Method::POST),
        ("/admin/session/end", Method::POST),
        ("/admin/overview", Method::GET),
        ("/admin/routes", Method::GET),
        ("/admin/audit", Method::GET),
        ("/admin/rejected", Method::GET),
        ("/admin/plugins/p/dry-run", Method::POST),
    ];

    /// The table and `docs/openapi.yaml` name the same paths, methods and number of
    /// parameters (schemathesis checks the rest against the running binary).
    #[test]
    fn the_openapi_document_has_every_route_and_no_other() {
        let doc = super::super::OPENAPI_YAML;
        let documented = doc
            .lines()
            .filter(|l| l.starts_with("    get:") || l.starts_with("    post:"))
            .count();
        assert_eq!(documented, EVERY_ROUTE.len());
        for (path, asked) in EVERY_ROUTE {
            let r = route_for(&asked, path).expect("a route");
            assert_eq!(r.method, asked, "{path}");
            let method = r.method.as_str().to_ascii_lowercase();
            let path_head = format!("\n  {}:\n", r.pattern);
            let block_start = doc
                .find(&path_head)
                .unwrap_or_else(|| panic!("{} is not documented", r.pattern));
            let block = &doc[block_start + path_head.len()..];
            let block_end = block.find("\n  /").unwrap_or(block.len());
            let block_end = block_end.min(block.find("\ncomponents:").unwrap_or(block_end));
            let block = &block[..block_end];
            let head = format!("    {method}:\n");
            let start = block
                .find(&head)
                .unwrap_or_else(|| panic!("{method} {} is not documented", r.pattern));
            let operation = &block[start + head.len()..];
            // The operation ends where the path's next method starts.
            let end = ["\n    get:", "\n    post:"]
                .iter()
                .filter_map(|m| operation.find(m))
                .min()
                .unwrap_or(operation.len());
            let parameters = operation[..end]
                .lines()
                .filter(|l| l.starts_with("        - name: ") || l.starts_with("        - $ref: "))
                .count();
            let in_path = usize::from(r.pattern.contains('{'));
            assert_eq!(
                parameters,
                r.params.len() + in_path,
                "{method} {}: {:?}",
                r.pattern,
                r.params
            );
        }
    }

    #[test]
    fn each_path_has_one_method_and_other_paths_are_nobodys() {
        let events = route("/admin/events/7").expect("a route");
        assert_eq!(
            (events.endpoint, events.method),
            (Endpoint::Event("7"), Method::GET)
        );
        let session = route_for(&Method::POST, "/admin/session").expect("a route");
        assert_eq!(session.endpoint, Endpoint::SignIn);
        assert!(session.endpoint.is_public());
        assert_eq!(session.allow(), "GET, POST");
        let replay = route("/admin/events/7/replay").expect("a route");
        assert_eq!(replay.method, Method::POST);
        assert_eq!(replay.params, NONE);
        assert_eq!(
            route("/admin/replay").map(|r| r.params),
            Some(REPLAY),
            "only a filtered replay takes `all`"
        );
        for nobodys in [
            "/admin",
            "/admin/events/7/replay/again",
            "/admin/events/7/deliveries",
            "/admin/deliveries",
            "/admin/deliveries/3",
            "/admin/route-runs",
            "/admin/dead-letters/3",
            "/admin/quarantine/1/body",
            "/admin/openapi.json",
        ] {
            assert_eq!(route(nobodys), None, "{nobodys}");
        }
    }
}
