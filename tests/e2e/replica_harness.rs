//! Harness for replicas on one PostgreSQL: a throwaway cluster (fsync on), gateways started
//! from the real binary with `[store] url` pointing at it, a sink every event is routed to,
//! and senders that behave like providers: each event is sent until some replica acks it with
//! a 200, trying the next replica after a refusal, a 503 or a cut connection. It proves
//! nothing by itself; `replicas.rs` does.

use crate::harness::*;
use crate::sink::{Mode, Sink};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use throwaway_pg::Cluster;

/// The lease replicas run with here: a killed replica's work waits this long.
pub(crate) const LEASE: &str = "2s";

/// A config for one replica: the standard sources, the store on PostgreSQL (the connection
/// string in `GATEWAY_DATABASE_URL`), every Ledger and Ledig event routed to the sink.
pub(crate) fn replica_config(sink_url: &str) -> String {
    let standard = config(&PathBuf::from("unused.db"), &Settings::default());
    let standard = standard.replace(
        "path = \"unused.db\"\n",
        &format!("url = \"env:GATEWAY_DATABASE_URL\"\nlease = \"{LEASE}\"\n"),
    );
    format!(
        r#"{standard}
[admin]
token = "env:E2E_ADMIN_TOKEN"

[destinations.sink]
http = "{sink_url}"
secret = "env:E2E_SINK_SECRET"
allow_private_network = true
timeout = "2s"
max_attempts = 3
backoff_initial = "50ms"
backoff_max = "200ms"
concurrency = 16

[[routes]]
name = "all"
match = {{ source = ["ledger", "ledig"], type = ["*"] }}
plugins = []
to = ["sink"]
"#
    )
}

/// Starts one replica with `config_text` on the database `conninfo` names.
pub(crate) fn start_replica(config_text: &str, conninfo: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("create temp dir");
    std::fs::write(dir.path().join("gateway.toml"), config_text).expect("write config");
    restart_replica(dir, conninfo)
}

/// Starts a replica again in the directory a killed or stopped one left.
pub(crate) fn restart_replica(dir: tempfile::TempDir, conninfo: &str) -> Gateway {
    let db = dir.path().join("unused.db");
    let conninfo = conninfo.to_owned();
    Gateway::start_in_with(dir, db, move |c| {
        c.env("GATEWAY_DATABASE_URL", conninfo);
    })
}

/// A database, a sink answering `mode`, and `n` replicas routing every event to the sink.
pub(crate) struct Deployment {
    pub(crate) pg: Cluster,
    pub(crate) sink: Sink,
    pub(crate) conninfo: String,
    pub(crate) replicas: Vec<Gateway>,
}

impl Deployment {
    pub(crate) fn start(n: usize, mode: Mode) -> Self {
        let pg = database();
        let sink = Sink::start(mode);
        let config = replica_config(&sink.url());
        let conninfo = pg.conninfo("gateway");
        let replicas = (0..n).map(|_| start_replica(&config, &conninfo)).collect();
        Self {
            pg,
            sink,
            conninfo,
            replicas,
        }
    }

    /// The replicas' addresses, shared with senders (a restarted replica's is swapped in).
    pub(crate) fn addrs(&self) -> Arc<Mutex<Vec<SocketAddr>>> {
        Arc::new(Mutex::new(self.replicas.iter().map(|g| g.addr).collect()))
    }
}

/// A throwaway cluster with an empty `gateway` database.
pub(crate) fn database() -> Cluster {
    let pg = Cluster::start().expect("a throwaway PostgreSQL cluster");
    pg.create_database("gateway").expect("createdb");
    pg
}

/// A number from a one-value query.
pub(crate) fn pg_count(pg: &Cluster, sql: &str) -> i64 {
    let out = pg.psql("gateway", sql).expect("psql");
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{sql} gave {out:?}"))
}

/// The dedup keys of the stored Ledger events.
pub(crate) fn stored_ledger_ids(pg: &Cluster) -> std::collections::HashSet<String> {
    pg.psql(
        "gateway",
        "SELECT dedup_key FROM events WHERE source = 'ledger'",
    )
    .expect("psql")
    .lines()
    .map(|l| l.trim().to_owned())
    .filter(|l| !l.is_empty())
    .collect()
}

/// Deliveries recorded more than once for one (event, route, destination): routing results
/// written by two replicas for the same event. Must be 0.
pub(crate) fn routed_twice(pg: &Cluster) -> i64 {
    pg_count(
        pg,
        "SELECT count(*) FROM (SELECT event_seq, route, destination FROM deliveries \
         GROUP BY 1, 2, 3 HAVING count(*) > 1) twice",
    )
}

/// What the senders saw.
#[derive(Debug, Default)]
pub(crate) struct Answers {
    /// Ids some replica answered 200 `{"ok":true}` for.
    pub(crate) acked: Vec<String>,
    /// 503s (store unavailable), refusals and cut connections, each followed by a retry.
    pub(crate) retried: usize,
}

/// Provider-like senders spreading unique Ledger events over the replicas' addresses.
pub(crate) struct Senders {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Answers>>,
    threads: Vec<JoinHandle<()>>,
}

impl Senders {
    /// `n` threads; `addrs` is read before every try, so tests can swap a restarted
    /// replica's address in.
    pub(crate) fn start(
        addrs: &Arc<Mutex<Vec<SocketAddr>>>,
        n: usize,
        prefix: &'static str,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Answers::default()));
        let threads = (0..n)
            .map(|t| {
                let (addrs, stop, answers) =
                    (Arc::clone(addrs), Arc::clone(&stop), Arc::clone(&answers));
                std::thread::spawn(move || send_until_stopped(&addrs, t, prefix, &stop, &answers))
            })
            .collect();
        Self {
            stop,
            answers,
            threads,
        }
    }

    /// Acks so far.
    pub(crate) fn acked(&self) -> usize {
        self.answers.lock().expect("answers").acked.len()
    }

    /// Waits until `more` acks came after this call.
    pub(crate) fn wait_for_acks(&self, more: usize) {
        let target = self.acked() + more;
        let deadline = Instant::now() + PATIENCE;
        while self.acked() < target {
            assert!(
                Instant::now() < deadline,
                "only {} of {target} acks within {PATIENCE:?}",
                self.acked()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the senders (each finishes the event it is sending, until acked).
    pub(crate) fn stop(self) -> Answers {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("sender thread did not panic");
        }
        std::mem::take(&mut *self.answers.lock().expect("answers"))
    }
}

fn send_until_stopped(
    addrs: &Mutex<Vec<SocketAddr>>,
    thread: usize,
    prefix: &str,
    stop: &AtomicBool,
    answers: &Mutex<Answers>,
) {
    let mut turn = thread;
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let id = format!("{prefix}_{thread}_{i}");
        let body = crate::ack_stream::ledger_event(&id);
        // Like a provider: the same event again until it is acknowledged, here on the next
        // replica each time, with a short pause (a provider's backoff is longer).
        let deadline = Instant::now() + PATIENCE * 4;
        loop {
            let addr = {
                let addrs = addrs.lock().expect("addrs");
                addrs[turn % addrs.len()]
            };
            turn += 1;
            let answer = try_request(
                addr,
                "POST",
                "/webhooks/ledger",
                &ledger_headers(LEDGER_SECRET, now(), &body),
                &body,
            )
            .ok();
            match answer {
                Some(r) if r.status == 200 && r.body == r#"{"ok":true}"# => {
                    answers.lock().expect("answers").acked.push(id);
                    break;
                }
                Some(r) if r.status == 200 && r.body == r#"{"ok":true,"duplicate":true}"# => {
                    // An earlier try was stored but its answer was lost (cut connection):
                    // the event is stored, which is what an ack means.
                    answers.lock().expect("answers").acked.push(id);
                    break;
                }
                Some(r) if r.status == 503 => {}
                None => {}
                Some(r) => panic!("unexpected answer under load: {} {}", r.status, r.body),
            }
            answers.lock().expect("answers").retried += 1;
            assert!(
                Instant::now() < deadline,
                "{id} was never acknowledged by any replica"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits until the sink received every one of `ids` at least once (by event id).
pub(crate) fn wait_delivered(sink: &Sink, ids: &[String], patience: Duration) {
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    sink.wait_for(patience, "every acknowledged event delivered", |got| {
        let seen: std::collections::HashSet<&str> =
            got.iter().filter_map(|r| r.event_id()).collect();
        wanted.iter().all(|id| seen.contains(id))
    });
}
