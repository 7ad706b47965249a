//! The admin API's endpoints: which one a path names, the one method it answers and the query
//! parameters it takes (the table `docs/openapi.yaml` describes). Knows nothing of tokens, the
//! store or parameter values; a path it does not know is nobody's, so it is 404 whatever the
//! method, and a known path with another method is 405.

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
    RedriveAll,
    RedriveDelivery(&'p str),
    RedriveRouteRun(&'p str),
    BlockedSubjects,
    SkipDelivery(&'p str),
    Plugins,
    Quarantine,
    Quarantined(&'p str),
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
    "source", "type", "status", "since", "until", "before", "limit",
];
const REPLAY: &[&str] = &[
    "source", "type", "status", "since", "until", "before", "limit", "all",
];
const QUARANTINE: &[&str] = &["source", "before", "limit"];
const LIMIT: &[&str] = &["limit"];
const NONE: &[&str] = &[];

/// The route of `segments` (the path after `/admin/`, split at `/`), if it is one.
pub(super) fn resolve<'p>(segments: &[&'p str]) -> Option<Route<'p>> {
    let (endpoint, method, pattern, params) = match *segments {
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
        ["dead-letters", "redrive"] => (
            Endpoint::RedriveAll,
            Method::POST,
            "/admin/dead-letters/redrive",
            NONE,
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
        let segments: Vec<&str> = path.split('/').skip(2).collect();
        resolve(&segments)
    }

    /// One path of each route.
    const EVERY_ROUTE: [&str; 14] = [
        "/admin/openapi.yaml",
        "/admin/events",
        "/admin/events/1",
        "/admin/events/1/replay",
        "/admin/replay",
        "/admin/dead-letters",
        "/admin/dead-letters/redrive",
        "/admin/deliveries/1/redrive",
        "/admin/route-runs/1/redrive",
        "/admin/blocked-subjects",
        "/admin/deliveries/1/skip",
        "/admin/plugins",
        "/admin/quarantine",
        "/admin/quarantine/1",
    ];

    /// The table and `docs/openapi.yaml` name the same paths, methods and number of
    /// parameters (schemathesis checks the rest against the running binary).
    #[test]
    fn the_openapi_document_has_every_route_and_no_other() {
        let doc = super::super::OPENAPI_YAML;
        let documented = doc.lines().filter(|l| l.starts_with("  /admin/")).count();
        assert_eq!(documented, EVERY_ROUTE.len());
        for path in EVERY_ROUTE {
            let r = route(path).expect("a route");
            let method = r.method.as_str().to_ascii_lowercase();
            let head = format!("\n  {}:\n    {method}:\n", r.pattern);
            let start = doc
                .find(&head)
                .unwrap_or_else(|| panic!("{method} {} is not documented", r.pattern));
            let operation = &doc[start + head.len()..];
            let end = operation.find("\n  /admin/").unwrap_or(operation.len());
            let end = end.min(operation.find("\ncomponents:").unwrap_or(end));
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
