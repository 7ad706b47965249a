//! The PostgreSQL server of `--store postgres`: a throwaway cluster (the `throwaway-pg` crate:
//! unix socket in a temp dir, fsync, synchronous_commit and full_page_writes on) plus the
//! settings a deployment with a write-heavy load would set ([`SETTINGS`]), a fresh database per
//! measured target, the postmaster's pid for CPU accounting, and the server's own account of a
//! phase from its statistics views: commits, WAL written, WAL flushes. It never turns off a
//! setting that makes a commit durable: the benchmark measures acks that survive a crash.

use anyhow::Context as _;
use throwaway_pg::{Cluster, Options};

/// What is set on top of throwaway-pg's defaults: memory for the WAL, checkpoints far enough
/// apart that a few minutes of load does not force one (a checkpoint's full-page images would
/// double the WAL for a while), and data pages written back as they are made instead of in
/// bursts. `track_wal_io_timing` only adds the flush times to `pg_stat_wal`, for the report.
///
/// The write-back settings are what the p99 ack needs when the WAL shares its disk with the
/// tables (docs/performance.md, "The p99 at 10,000/s"): with 1 GB of shared buffers nothing
/// writes a new page before a checkpoint except the kernel, which writes what a table file
/// gathered in 30 s at once, 600-900 MB in one second here, and every WAL flush waits behind
/// it. Small buffers and an eager background writer write pages within seconds, and every
/// write of a buffer (the writer's 512 kB default, and `backend_flush_after`) asks the kernel
/// to start on it at once. Measured at 10,000/s: p99 median 216 ms -> 20 ms; the maximum rate
/// paid about 6%.
pub(crate) const SETTINGS: [(&str, &str); 10] = [
    ("shared_buffers", "32MB"),
    ("bgwriter_delay", "10ms"),
    ("bgwriter_lru_maxpages", "1000"),
    ("bgwriter_lru_multiplier", "4"),
    ("backend_flush_after", "256kB"),
    ("wal_buffers", "64MB"),
    ("max_wal_size", "8GB"),
    ("min_wal_size", "1GB"),
    ("checkpoint_timeout", "15min"),
    ("track_wal_io_timing", "on"),
];

/// [`SETTINGS`] as the headers print them (`name=value ...`).
pub(crate) fn settings_text() -> String {
    SETTINGS
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The settings read back from the server, printed in the header so a run can be reproduced.
const SHOWN: [&str; 17] = [
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "shared_buffers",
    "bgwriter_delay",
    "bgwriter_lru_maxpages",
    "bgwriter_lru_multiplier",
    "backend_flush_after",
    "wal_buffers",
    "max_wal_size",
    "min_wal_size",
    "checkpoint_timeout",
    "commit_delay",
    "max_connections",
    "track_wal_io_timing",
];

#[derive(Debug)]
pub(crate) struct Database {
    cluster: Cluster,
    /// `pg_stat_statements` is loaded (`--pg-statements`).
    statements: bool,
    /// Settings given with `--pg-set`, read back with the others.
    extra: Vec<String>,
}

/// One `--pg-set NAME=VALUE`.
pub(crate) fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value))
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') =>
        {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "`{text}`: expected NAME=VALUE (a PostgreSQL setting)"
        )),
    }
}

/// Statements shown per phase by `--pg-statements`, the most expensive first.
const TOP_STATEMENTS: usize = 12;

/// The server's counters at one moment (`pg_stat_wal`, `pg_stat_database`, checkpoints).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    commits: f64,
    wal_records: f64,
    wal_bytes: f64,
    wal_buffers_full: f64,
    wal_writes: f64,
    wal_syncs: f64,
    wal_sync_ms: f64,
    checkpoints: f64,
}

impl Database {
    /// A cluster with [`SETTINGS`], then `extra` (`--pg-set`: for finding out what a setting
    /// changes; the figures of record use [`SETTINGS`] alone).
    pub(crate) fn start(statements: bool, extra: &[(String, String)]) -> anyhow::Result<Self> {
        let mut options = SETTINGS
            .iter()
            .fold(Options::default(), |o, (name, value)| o.set(name, value));
        for (name, value) in extra {
            options = options.set(name, value);
        }
        if statements {
            options = options
                .set("shared_preload_libraries", "pg_stat_statements")
                .set("pg_stat_statements.max", "1000");
        }
        let cluster = Cluster::start_with(&options).context(
            "cannot start a throwaway PostgreSQL cluster (`--store postgres` needs Debian's \
             `postgresql` package, or PG_BIN naming a dir with initdb)",
        )?;
        if statements {
            cluster
                .psql("postgres", "CREATE EXTENSION pg_stat_statements")
                .context("cannot create pg_stat_statements (Debian's postgresql has it)")?;
        }
        Ok(Self {
            cluster,
            statements,
            extra: extra.iter().map(|(name, _)| name.clone()).collect(),
        })
    }

    /// Forgets what `pg_stat_statements` counted so far (nothing without `--pg-statements`).
    pub(crate) fn reset_statements(&self) {
        if self.statements
            && let Err(e) = self
                .cluster
                .psql("postgres", "SELECT pg_stat_statements_reset()")
        {
            eprintln!("postgres: cannot reset pg_stat_statements: {e}");
        }
    }

    /// The statements that took the server's time since [`Database::reset_statements`], one
    /// line each, per acked event: execution time, calls, rows and WAL records.
    pub(crate) fn statements(&self, acked: u64) -> Vec<String> {
        if !self.statements {
            return Vec::new();
        }
        let per = acked.max(1) as f64;
        let sql = format!(
            "SELECT round(total_exec_time::numeric, 3), calls, rows, wal_records, \
                    regexp_replace(left(query, 110), '\\s+', ' ', 'g') \
             FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT {TOP_STATEMENTS}"
        );
        let text = match self.cluster.psql("postgres", &sql) {
            Ok(text) => text,
            Err(e) => return vec![format!("postgres: cannot read pg_stat_statements: {e}")],
        };
        let mut lines = vec![format!(
            "  statements per acked event ({acked} acked): exec us, calls, rows, WAL records"
        )];
        for row in text.lines() {
            let cols: Vec<&str> = row.splitn(5, '|').collect();
            let [ms, calls, rows, wal, query] = cols[..] else {
                continue;
            };
            let n = |v: &str| v.parse::<f64>().unwrap_or(f64::NAN);
            lines.push(format!(
                "  {:>7.2} us {:>6.3} calls {:>6.2} rows {:>6.2} wal  {query}",
                n(ms) * 1000.0 / per,
                n(calls) / per,
                n(rows) / per,
                n(wal) / per,
            ));
        }
        lines
    }

    /// A new empty database; its libpq connection string.
    pub(crate) fn fresh(&self, name: &str) -> anyhow::Result<String> {
        self.cluster
            .create_database(name)
            .with_context(|| format!("cannot create the database {name}"))?;
        Ok(self.cluster.conninfo(name))
    }

    /// Drops a database [`Database::fresh`] made, once its gateways have stopped: what they
    /// left (an autovacuum's work, dirty pages) does not fall on the next phase.
    pub(crate) fn discard(&self, name: &str) -> anyhow::Result<()> {
        self.cluster
            .psql(
                "postgres",
                &format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
            )
            .with_context(|| format!("cannot drop the database {name}"))?;
        Ok(())
    }

    /// The settings that decide the figures, as `name=value` pairs, each value as `SHOW` gives
    /// it (`pg_settings.setting` is in the unit's multiples: 4096 of 8kB, not 32MB).
    pub(crate) fn describe_settings(&self) -> String {
        let list = SHOWN
            .iter()
            .map(|s| (*s).to_owned())
            .chain(self.extra.iter().cloned())
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name) \
             FROM pg_settings WHERE name IN ({list})"
        );
        match self.cluster.psql("postgres", &sql) {
            Ok(text) => text.trim().to_owned(),
            Err(e) => format!("(cannot read the settings: {e})"),
        }
    }

    /// The postmaster's pid (first line of `postmaster.pid`).
    pub(crate) fn postmaster(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.cluster.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The server's counters now; `None` (with a note on stderr) if they cannot be read.
    pub(crate) fn counters(&self) -> Option<Counters> {
        // pg_stat_wal: PostgreSQL 14+; wal_write/wal_sync moved to pg_stat_io in 18, where this
        // query fails and the report simply leaves the line out.
        let sql = "SELECT (SELECT sum(xact_commit) FROM pg_stat_database), wal_records, \
                   wal_bytes, wal_buffers_full, wal_write, wal_sync, wal_sync_time, \
                   (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) \
                   FROM pg_stat_wal";
        let text = self
            .cluster
            .psql("postgres", sql)
            .map_err(|e| eprintln!("postgres: cannot read pg_stat_wal: {e}"))
            .ok()?;
        let n: Vec<f64> = text
            .trim()
            .split('|')
            .map(|v| v.parse().unwrap_or(f64::NAN))
            .collect();
        let [
            commits,
            records,
            bytes,
            full,
            writes,
            syncs,
            sync_ms,
            checkpoints,
        ] = n[..]
        else {
            eprintln!("postgres: unexpected pg_stat_wal answer {text:?}");
            return None;
        };
        Some(Counters {
            commits,
            wal_records: records,
            wal_bytes: bytes,
            wal_buffers_full: full,
            wal_writes: writes,
            wal_syncs: syncs,
            wal_sync_ms: sync_ms,
            checkpoints,
        })
    }
}

/// What the server did between two readings, as one line; `acked`: the 200 answers in between,
/// to say how many of them one WAL flush made durable.
pub(crate) fn describe(before: &Counters, after: &Counters, seconds: f64, acked: u64) -> String {
    let d = |f: fn(&Counters) -> f64| f(after) - f(before);
    let per_sec = |v: f64| v / seconds.max(1e-9);
    let syncs = d(|c| c.wal_syncs);
    let sync_mean = if syncs >= 1.0 {
        format!("{:.2} ms", d(|c| c.wal_sync_ms) / syncs)
    } else {
        "-".to_owned()
    };
    format!(
        "{:.0} commits/s; WAL {:.1} MB/s, {:.0} records/s, {:.0} writes/s, {:.0} flushes/s \
         (fsync mean {sync_mean}), {:.1} acked events per flush; wal_buffers_full {:.0}; \
         checkpoints {:.0}",
        per_sec(d(|c| c.commits)),
        per_sec(d(|c| c.wal_bytes)) / 1e6,
        per_sec(d(|c| c.wal_records)),
        per_sec(d(|c| c.wal_writes)),
        per_sec(syncs),
        acked as f64 / syncs.max(1.0),
        d(|c| c.wal_buffers_full),
        d(|c| c.checkpoints),
    )
}
