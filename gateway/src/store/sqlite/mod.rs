//! The embedded SQLite store: one writer thread with group commit (`writer`), two reader
//! connections (`reader`: one for the workers, one for the admin API and gauges), a checkpoint
//! thread, and the newest pending events kept in memory for intake (`recent`); and the online
//! copy `gateway backup` takes of a store a gateway is writing to (`backup`).
//!
//! Nothing is acknowledged that is not durable: every write is answered only after its batch
//! committed (WAL, `synchronous = FULL`); a failed batch answers every request in it with the
//! error (503 on the webhook path, so providers retry).

pub(super) mod backup;
mod checkpoint;
mod claims;
mod envelope_row;
mod ordering;
#[cfg(test)]
mod quarantine_tests;
mod reader;
mod recent;
mod redrive;
mod writer;

use super::dead_letters::{DeadFilter, DeadLetterGroup};
use super::dedup_index::DedupIndex;
use super::object_states::ObjectStates;
use super::schema;
use super::work::{
    AttemptDone, AuditRecord, Backlog, BlockedSubject, ClaimedEvent, DeliveryView, DueDelivery,
    DueRouteRun, EventDetail, EventFilter, EventSummary, Processed, QuarantineEntry,
    RedriveSelection, RouteRunView, StoredEvent, StoredSpan,
};
use super::{
    DedupPruneStep, ExpiredEvents, IngestOutcome, Intake, NewEvent, QuarantinedBody, Store,
    StoreError,
};
use crate::metrics::Metrics;
use claims::{Claims, Kind};
use reader::Reader;
use recent::{Pending, RecentEvents};
use redrive::{Bulk, Listed};
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{Notify, mpsc, oneshot};
use writer::{Command, ExpireScan, Reply, Seen, writer_loop};

/// Requests that may wait for the writer before senders feel back-pressure.
const QUEUE_CAPACITY: usize = 16 * 1024;

/// Handle to the writer thread. Cheap to share; dropping the last one stops the writer after
/// it has finished the queued work.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    tx: mpsc::Sender<Command>,
    /// The workers' reads: intake, due retries, replays.
    reader: Reader,
    /// The admin API's reads and the backlog gauges, on a connection of their own: a listing
    /// whose filter matches nothing scans the whole window (0.17 s per 278k events here, so
    /// seconds on a big store), and the workers' polls must not queue behind it.
    observer: Reader,
    work: Arc<Notify>,
    recent: Arc<RecentEvents>,
    claims: Arc<Claims>,
    /// One event claim at a time: two reads after the same cursor would hand out the same
    /// new events.
    claiming: Arc<tokio::sync::Mutex<()>>,
}

/// Joins the writer thread at shutdown, after every [`SqliteStore`] handle is dropped.
#[derive(Debug)]
pub struct WriterThread {
    writer: JoinHandle<()>,
    checkpointer: JoinHandle<()>,
}

impl WriterThread {
    /// Blocks until the writer has committed everything queued, the WAL is checkpointed into
    /// the database file and both connections are closed.
    pub fn join(self) {
        if self.writer.join().is_err() {
            tracing::error!("store writer thread panicked");
        }
        if self.checkpointer.join().is_err() {
            tracing::error!("store checkpoint thread panicked");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database, rebuilds the dedup index for the last
    /// `dedup_window`, and starts the writer thread.
    pub fn open(
        path: &Path,
        dedup_window: std::time::Duration,
        metrics: Metrics,
    ) -> Result<(Self, WriterThread), StoreError> {
        let open_err = |source: rusqlite::Error| StoreError::Open {
            path: path.display().to_string(),
            source: Box::new(source),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Write(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.execute_batch(schema::PRAGMAS).map_err(open_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Write(format!(
                "{} cannot use WAL journaling (got `{mode}`)",
                path.display()
            )));
        }
        schema::apply(&conn).map_err(open_err)?;
        let cutoff = super::unix_ms()
            .saturating_sub(i64::try_from(dedup_window.as_millis()).unwrap_or(i64::MAX));
        let started = std::time::Instant::now();
        let (index, loaded) = DedupIndex::load(&mut conn, cutoff).map_err(open_err)?;
        tracing::info!(
            keys = index.len(),
            saved = loaded.saved,
            from_events = loaded.tail,
            ms = started.elapsed().as_millis(),
            "dedup index loaded"
        );
        let states = ObjectStates::load(&conn, super::unix_ms()).map_err(open_err)?;
        if states.len() > 0 {
            tracing::info!(objects = states.len(), "latest object states loaded");
        }
        let index = Seen {
            keys: index,
            states,
        };
        let max_seq: i64 = conn
            .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(open_err)?;
        let recent = Arc::new(RecentEvents::new(max_seq));
        let claims = Arc::new(Claims::new(
            reader::intake_watermark(&conn).map_err(open_err)?,
        ));
        // Checkpoints run on their own thread (passive: they never block a commit). SQLite
        // rewinds the WAL only at a commit that finds every frame checkpointed, which under
        // steady load the thread never achieves (the writer commits again while it copies), so
        // then the writer's backstop checkpoint does it once per 64 MiB of WAL: cheap, as the
        // thread has already copied nearly everything (a few pages and a ~0.3 ms fsync).
        set_wal_limits(&conn).map_err(open_err)?;
        let checkpoint_conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        checkpoint_conn
            .execute_batch(schema::PRAGMAS)
            .map_err(open_err)?;
        let (stop_checkpoints, stop) = std::sync::mpsc::channel::<()>();
        let db_path = path.to_path_buf();
        let checkpointer = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoint::run(&checkpoint_conn, &db_path, &stop))
            .map_err(|e| StoreError::Write(format!("cannot start checkpoint thread: {e}")))?;
        let open_reader = || -> Result<Reader, StoreError> {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)?;
            conn.execute_batch("PRAGMA busy_timeout = 5000;")
                .map_err(open_err)?;
            Ok(Reader::new(conn))
        };
        let reader = open_reader()?;
        let observer = open_reader()?;
        let work = Arc::new(Notify::new());
        let signal = Arc::clone(&work);
        let committed = Arc::clone(&recent);
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer_loop(conn, index, rx, &metrics, &signal, &committed);
                drop(stop_checkpoints);
            })
            .map_err(|e| StoreError::Write(format!("cannot start writer thread: {e}")))?;
        Ok((
            Self {
                tx,
                reader,
                observer,
                work,
                recent,
                claims,
                claiming: Arc::default(),
            },
            WriterThread {
                writer,
                checkpointer,
            },
        ))
    }

    /// Events still `pending` with a seq above `after_seq`, oldest first (from memory when the
    /// newest events are all there).
    async fn pending_events(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let max = usize::try_from(limit).unwrap_or(usize::MAX);
        if let Pending::Known(events) = self.recent.pending_after(after_seq, max) {
            return Ok(events);
        }
        self.reader
            .with(move |c| reader::pending_events(c, after_seq, limit))
            .await
    }

    /// Events an operator asked to replay, oldest first (no query while none was asked for).
    async fn replay_events(&self, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let Some(generation) = self.recent.replay_query_needed() else {
            return Ok(Vec::new());
        };
        let events = self
            .reader
            .with(move |c| reader::replay_events(c, limit))
            .await?;
        if events.is_empty() {
            self.recent.replays_empty_at(generation);
        }
        Ok(events)
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait::async_trait]
impl Intake for SqliteStore {
    async fn ingest(&self, event: NewEvent) -> Result<IngestOutcome, StoreError> {
        let keys = writer::EventKeys::of(&event);
        self.call(|r| Command::Ingest(event, keys, r)).await
    }

    async fn quarantine(&self, body: QuarantinedBody) -> Result<(), StoreError> {
        // Hashed here, on the caller's task, not on the writer thread every ack waits for.
        let digest: [u8; 32] = Sha256::digest(&body.raw_body).into();
        self.call(|r| Command::Quarantine(body, digest, r)).await
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        self.call(Command::Probe).await
    }

    async fn prune_dedup(&self, cutoff_ms: i64) -> Result<DedupPruneStep, StoreError> {
        self.call(|r| Command::Prune(cutoff_ms, r)).await
    }

    async fn prune_object_states(&self, now_ms: i64) -> Result<DedupPruneStep, StoreError> {
        self.call(|r| Command::PruneStates(now_ms, r)).await
    }

    async fn expire_quarantine(
        &self,
        cutoff_ms: i64,
        after_id: i64,
        limit: u32,
    ) -> Result<ExpiredEvents, StoreError> {
        let scan = ExpireScan {
            cutoff_ms,
            after_seq: after_id,
            limit,
        };
        self.call(|r| Command::ExpireQuarantine(scan, r)).await
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn expire_events(
        &self,
        cutoff_ms: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<ExpiredEvents, StoreError> {
        let scan = ExpireScan {
            cutoff_ms,
            after_seq,
            limit,
        };
        self.call(|r| Command::Expire(scan, r)).await
    }

    fn work_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.work)
    }

    async fn claim_events(&self, limit: u32) -> Result<Vec<ClaimedEvent>, StoreError> {
        let _one_at_a_time = self.claiming.lock().await;
        let cursor = self.claims.begin(Kind::Replay);
        let mut claimed: Vec<ClaimedEvent> = self
            .replay_events(limit)
            .await?
            .into_iter()
            .filter(|e| self.claims.take(Kind::Replay, e.seq))
            .map(|event| ClaimedEvent {
                event,
                replay: true,
            })
            .collect();
        let room = limit.saturating_sub(u32::try_from(claimed.len()).unwrap_or(u32::MAX));
        if room > 0 {
            let fresh = self.pending_events(cursor, room).await?;
            let seqs: Vec<i64> = fresh.iter().map(|e| e.seq).collect();
            self.claims.take_new(&seqs);
            claimed.extend(fresh.into_iter().map(|event| ClaimedEvent {
                event,
                replay: false,
            }));
        }
        Ok(claimed)
    }

    async fn complete(&self, processed: Arc<Vec<Processed>>) -> Result<(), StoreError> {
        self.call(|r| Command::Complete(Arc::clone(&processed), r))
            .await?;
        for p in processed.iter() {
            let retried: Vec<i64> = p.route_runs.iter().filter_map(|r| r.id).collect();
            if p.append && !retried.is_empty() {
                for id in retried {
                    self.claims.finish(Kind::RouteRun, id);
                }
            } else {
                self.claims.finish_event(p.seq);
            }
        }
        if let Some(watermark) = self.claims.watermark_to_save() {
            // Only where a start resumes; losing one save costs a slightly longer scan.
            if self
                .call(|r| Command::Watermark(watermark, r))
                .await
                .is_ok()
            {
                self.claims.saved(watermark);
            }
        }
        Ok(())
    }

    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.claims.begin(Kind::Delivery);
        let (due, heads) = self
            .reader
            .with(move |c| {
                let due = reader::due_deliveries(c, now_ms, limit)?;
                let heads = ordering::due_heads(c, now_ms, limit)?;
                Ok((due, heads))
            })
            .await?;
        let mut claimed: Vec<DueDelivery> = due
            .into_iter()
            .filter(|d| self.claims.take(Kind::Delivery, d.id))
            .collect();
        claimed.extend(heads.into_iter().filter_map(|(d, subject)| {
            self.claims
                .take_ordered(d.id, &d.destination, subject)
                .then_some(d)
        }));
        Ok(claimed)
    }

    async fn record_attempt(&self, done: AttemptDone) -> Result<(), StoreError> {
        let id = done.delivery_id;
        self.call(|r| Command::Attempt(done, r)).await?;
        self.claims.finish(Kind::Delivery, id);
        Ok(())
    }

    async fn claim_due_route_runs(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueRouteRun>, StoreError> {
        self.claims.begin(Kind::RouteRun);
        let due = self
            .reader
            .with(move |c| reader::due_route_runs(c, now_ms, limit))
            .await?;
        Ok(due
            .into_iter()
            .filter(|r| self.claims.take(Kind::RouteRun, r.id))
            .collect())
    }

    async fn release_claims(&self) -> Result<(), StoreError> {
        // One process per file: nobody else could take the work, and the marks end with it.
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog, StoreError> {
        let watermark = self.claims.watermark();
        self.observer
            .with(move |c| reader::backlog(c, watermark))
            .await
    }

    fn runs_cluster_jobs(&self) -> bool {
        true
    }

    async fn list_events(
        &self,
        filter: EventFilter,
        limit: u32,
    ) -> Result<Vec<EventSummary>, StoreError> {
        self.observer
            .with(move |c| reader::list_events(c, &filter, limit))
            .await
    }

    async fn list_quarantine(
        &self,
        source: Option<String>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.observer
            .with(move |c| reader::list_quarantine(c, source.as_deref(), before, limit))
            .await
    }

    async fn event(&self, seq: i64) -> Result<Option<EventDetail>, StoreError> {
        self.observer.with(move |c| reader::event(c, seq)).await
    }

    async fn stored_span(&self) -> Result<Option<StoredSpan>, StoreError> {
        self.observer.with(reader::stored_span).await
    }

    async fn dead_letters(
        &self,
        limit: u32,
    ) -> Result<(Vec<DeliveryView>, Vec<RouteRunView>), StoreError> {
        self.observer
            .with(move |c| reader::dead_letters(c, limit))
            .await
    }

    async fn dead_letter_groups(&self) -> Result<Vec<DeadLetterGroup>, StoreError> {
        self.observer.with(reader::dead_letter_groups).await
    }

    async fn count_dead(&self, filter: DeadFilter) -> Result<(u64, Option<i64>), StoreError> {
        self.observer
            .with(move |c| reader::count_dead(c, &filter))
            .await
    }

    async fn dead_page(
        &self,
        filter: DeadFilter,
        after: i64,
        through: i64,
        limit: u32,
    ) -> Result<Vec<i64>, StoreError> {
        self.observer
            .with(move |c| reader::dead_page(c, &filter, after, through, limit))
            .await
    }

    async fn request_replay(&self, filter: EventFilter, limit: u32) -> Result<u64, StoreError> {
        self.call(|r| Command::Replay(filter, limit, r)).await
    }

    async fn count_replay(&self, filter: EventFilter, limit: u32) -> Result<u64, StoreError> {
        self.observer
            .with(move |c| reader::count_replay(c, &filter, limit))
            .await
    }

    async fn record_audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        self.call(|r| Command::Audit(record, r)).await
    }

    async fn list_audit(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.observer
            .with(move |c| reader::list_audit(c, before, limit))
            .await
    }

    async fn blocked_subjects(&self, limit: u32) -> Result<Vec<BlockedSubject>, StoreError> {
        self.observer
            .with(move |c| ordering::blocked_subjects(c, limit))
            .await
    }

    async fn skip_blocking(&self, delivery_id: i64) -> Result<u64, StoreError> {
        self.call(|r| Command::Redrive(Listed::SkipBlocking(delivery_id), r))
            .await
    }

    async fn redrive(&self, selection: RedriveSelection) -> Result<u64, StoreError> {
        let bulks: &[Bulk] = match selection {
            RedriveSelection::Deliveries(ids) => {
                return self
                    .call(|r| Command::Redrive(Listed::Deliveries(ids), r))
                    .await;
            }
            RedriveSelection::RouteRuns(ids) => {
                return self
                    .call(|r| Command::Redrive(Listed::RouteRuns(ids), r))
                    .await;
            }
            RedriveSelection::All => &[Bulk::DeadDeliveries, Bulk::DeadRouteRuns],
            RedriveSelection::WaitingRouteRuns => &[Bulk::WaitingRouteRuns],
        };
        // In steps, so the ingests sharing each commit are not held up; the rows a step has
        // passed are not looked at again, so a delivery that dies again meanwhile waits for
        // the next redrive.
        let mut count = 0;
        for &bulk in bulks {
            let mut after = 0;
            loop {
                let step = self.call(|r| Command::RedriveStep(bulk, after, r)).await?;
                count += step.count;
                match step.resume_after {
                    Some(id) => after = id,
                    None => break,
                }
            }
        }
        Ok(count)
    }
}

/// Sets the writer's WAL limits (see [`schema::WAL_BACKSTOP_BYTES`]): the backstop
/// checkpoint is counted in pages, so it follows the file's page size (8 KiB for a new store,
/// 4 KiB for one created by an earlier version). Returns the backstop in pages.
fn set_wal_limits(conn: &Connection) -> rusqlite::Result<i64> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let backstop_pages = schema::WAL_BACKSTOP_BYTES / page_size.max(512);
    conn.pragma_update(None, "journal_size_limit", schema::WAL_BACKSTOP_BYTES)?;
    conn.pragma_update(None, "wal_autocheckpoint", backstop_pages)?;
    Ok(backstop_pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        AttemptRecord, DeliveryState, EventStatus, NewDelivery, RouteRunState, RouteRunUpdate,
    };
    use std::time::Duration;

    const WINDOW: Duration = Duration::from_secs(3600);

    /// A minimal event with this dedup key (also used by the writer's tests).
    pub(super) fn event(key: &str) -> NewEvent {
        crate::store::conformance::event("ledger", key, super::super::unix_ms())
    }

    /// [`event`] about `subject`, as the envelope and the search see it.
    fn about(key: &str, subject: &str) -> NewEvent {
        let mut e = event(key);
        e.envelope = serde_json::json!({ "id": key, "subject": subject }).to_string();
        e.subject = Some(subject.to_owned());
        e
    }

    pub(super) fn open(path: &Path) -> (SqliteStore, WriterThread) {
        SqliteStore::open(path, WINDOW, Metrics::new().expect("metrics")).expect("opens")
    }

    #[tokio::test]
    async fn a_new_store_has_8_kib_pages_an_old_one_keeps_its_own_and_the_backstop_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let page_size = |path: &Path| -> i64 {
            let conn = Connection::open(path).expect("opens");
            conn.query_row("PRAGMA page_size", [], |r| r.get(0))
                .expect("reads")
        };
        let new = dir.path().join("new.db");
        let (store, writer) = open(&new);
        store.ingest(event("evt_1")).await.expect("ingests");
        drop(store);
        writer.join();
        assert_eq!(page_size(&new), 8192);

        // A store made with 4 KiB pages (an earlier version's) is opened and written as it is.
        let old = dir.path().join("old.db");
        Connection::open(&old)
            .and_then(|c| {
                c.execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;")?;
                schema::apply(&c)
            })
            .expect("an old store");
        let (store, writer) = open(&old);
        store.ingest(event("evt_1")).await.expect("ingests");
        drop(store);
        writer.join();
        assert_eq!(page_size(&old), 4096);

        // The backstop is the same 64 MiB whatever the page size, and equal to the size limit
        // (a WAL cut back by tens of MiB at a rewind stalls that commit).
        for (path, pages) in [(&new, 8192), (&old, 16384)] {
            let conn = Connection::open(path).expect("opens");
            assert_eq!(set_wal_limits(&conn).expect("sets"), pages);
            let read = |pragma: &str| -> i64 {
                conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
                    .expect("reads")
            };
            assert_eq!(read("wal_autocheckpoint"), pages);
            assert_eq!(read("journal_size_limit"), 64 << 20);
            assert_eq!(read("wal_autocheckpoint") * read("page_size"), 64 << 20);
        }
    }

    // Dedup across concurrent copies and restarts, and the Ledig object states, are checked on
    // this store and on PostgreSQL alike by the conformance suite (`store/conformance.rs`).

    #[tokio::test]
    async fn the_writer_saves_dedup_entries_with_its_commits_and_a_start_reads_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.db");
        let (store, writer) = open(&path);
        for i in 0..300 {
            store
                .ingest(event(&format!("evt_{i}")))
                .await
                .expect("ingests");
        }
        // Written while the writer ran (the first 256 at least), not only at the next start.
        let saved: i64 = Connection::open(&path)
            .expect("reads")
            .query_row("SELECT count(*) FROM dedup_keys", [], |r| r.get(0))
            .expect("counts");
        assert!((256..=300).contains(&saved), "{saved}");
        drop(store);
        writer.join();

        // A key rewritten in `events` is still known: the start read the saved entry.
        Connection::open(&path)
            .expect("writes")
            .execute(
                "UPDATE events SET dedup_key = 'x' WHERE dedup_key = 'evt_0'",
                [],
            )
            .expect("updates");
        let (store, writer) = open(&path);
        assert_eq!(
            store.ingest(event("evt_0")).await.expect("ingests"),
            IngestOutcome::Duplicate
        );
        drop(store);
        writer.join();
    }

    pub(super) fn delivery(state: DeliveryState) -> NewDelivery {
        NewDelivery {
            route: "r".into(),
            destination: "d".into(),
            webhook_id: "w".into(),
            envelope: Some("{\"changed\":true}".into()),
            state,
            attempts: vec![AttemptRecord {
                at: 1,
                status: Some(500),
                error: None,
                duration_ms: 3,
            }],
            order: None,
            stuck: None,
        }
    }

    pub(super) fn processed(seq: i64, deliveries: Vec<NewDelivery>) -> Arc<Vec<Processed>> {
        Arc::new(vec![Processed {
            seq,
            status: EventStatus::Routed,
            steps: Vec::new(),
            deliveries,
            route_runs: Vec::new(),
            append: false,
        }])
    }

    #[tokio::test]
    async fn a_long_admin_read_does_not_hold_up_the_workers_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, writer) = open(&dir.path().join("g.db"));
        store.ingest(event("evt_1")).await.expect("ingests");
        // The admin connection is busy (as with a listing that scans the window) until told.
        let (held, is_held) = std::sync::mpsc::channel();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let observer = store.observer.clone();
        let holder = std::thread::spawn(move || {
            let _busy = observer.hold();
            held.send(()).expect("test waits");
            let _ = wait.recv();
        });
        is_held.recv().expect("held");

        let soon = Duration::from_secs(5);
        let workers = async {
            // From the database, not from memory: a cursor before the in-memory window.
            store
                .reader
                .with(|c| reader::pending_events(c, 0, 10))
                .await?;
            store.claim_due_deliveries(i64::MAX, 10).await?;
            store.claim_due_route_runs(i64::MAX, 10).await?;
            store.reader.with(reader::intake_watermark).await
        };
        tokio::time::timeout(soon, workers)
            .await
            .expect("the workers' reads are not held up")
            .expect("reads");
        // The hold is real: an admin read waits for it.
        let listing = store.list_events(EventFilter::default(), 10);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), listing)
                .await
                .is_err(),
            "an admin read waits for its busy connection"
        );
        release.send(()).expect("holder waits");
        holder.join().expect("holder ends");
        assert_eq!(
            store
                .list_events(EventFilter::default(), 10)
                .await
                .expect("lists")
                .len(),
            1
        );
        drop(store);
        writer.join();
    }

    #[tokio::test]
    async fn routing_results_move_events_out_of_pending_and_deliveries_through_retries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, writer) = open(&dir.path().join("g.db"));
        for key in ["a", "b", "c"] {
            store.ingest(event(key)).await.expect("ingests");
        }
        let pending = store.pending_events(0, 10).await.expect("reads");
        assert_eq!(pending.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(pending[0].id, "a");

        let waiting = DeliveryState::Pending { next_attempt_ms: 0 };
        store
            .complete(processed(1, vec![delivery(waiting)]))
            .await
            .expect("completes");
        store
            .complete(processed(2, vec![delivery(DeliveryState::Delivered)]))
            .await
            .expect("completes");
        let pending = store.pending_events(0, 10).await.expect("reads");
        assert_eq!(pending.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
        let backlog = store.backlog().await.expect("counts");
        assert_eq!(backlog.queue_depth, 2, "event 3 + the waiting delivery");
        assert_eq!(
            backlog.first_due_at_ms,
            Some(0),
            "the waiting delivery was due at 0, before event 3 arrived"
        );

        // The waiting delivery is due, with the envelope the plugins made.
        let due = store
            .claim_due_deliveries(i64::MAX, 10)
            .await
            .expect("reads");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].envelope, "{\"changed\":true}");
        assert_eq!(due[0].attempts, 1);
        store
            .record_attempt(AttemptDone {
                delivery_id: due[0].id,
                attempt: AttemptRecord {
                    at: 2,
                    status: None,
                    error: Some("refused".into()),
                    duration_ms: 1,
                },
                state: DeliveryState::Dead {
                    reason: "gave up".into(),
                },
                holds_subject: false,
                stuck: None,
            })
            .await
            .expect("records");
        assert!(
            store
                .claim_due_deliveries(i64::MAX, 10)
                .await
                .expect("reads")
                .is_empty()
        );
        let (dead, _) = store.dead_letters(10).await.expect("reads");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].history.len(), 2);
        assert_eq!(dead[0].last_error.as_deref(), Some("gave up"));
        let backlog = store.backlog().await.expect("counts");
        assert_eq!(backlog.dead_letters, 1);
        let arrived = store.event(3).await.expect("reads").expect("event 3");
        assert_eq!(
            backlog.first_due_at_ms,
            Some(arrived.summary.received_at),
            "a dead letter waits for no worker: event 3 is the oldest due work"
        );
        assert_eq!(
            store
                .redrive(RedriveSelection::All)
                .await
                .expect("redrives"),
            1
        );
        assert_eq!(
            store
                .claim_due_deliveries(i64::MAX, 10)
                .await
                .expect("reads")
                .len(),
            1
        );

        // Replays: only routed events; a pending one is on its way already.
        let only = |seq| EventFilter {
            seq: Some(seq),
            ..EventFilter::default()
        };
        assert_eq!(store.request_replay(only(3), 10).await.expect("marks"), 0);
        assert_eq!(store.request_replay(only(2), 10).await.expect("marks"), 1);
        let replays = store.replay_events(10).await.expect("reads");
        assert_eq!(replays.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
        let detail = store.event(2).await.expect("reads").expect("exists");
        assert_eq!(detail.summary.status, "replay");
        // A delivered delivery does not keep its envelope.
        let conn = Connection::open(dir.path().join("g.db")).expect("opens");
        let kept: Option<String> = conn
            .query_row(
                "SELECT envelope FROM deliveries WHERE event_seq = 2",
                [],
                |r| r.get(0),
            )
            .expect("reads");
        assert_eq!(kept, None);
        drop(store);
        writer.join();
    }

    #[tokio::test]
    async fn status_filters_find_old_matches_through_an_index_not_a_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.db");
        let (store, writer) = open(&path);
        for n in 1..=9 {
            store
                .ingest(event(&format!("e{n}")))
                .await
                .expect("ingests");
        }
        let finished = [
            (1, EventStatus::Routed),
            (2, EventStatus::Unrouted),
            (3, EventStatus::Dropped),
            (4, EventStatus::Retrying),
            (5, EventStatus::Failed),
            (6, EventStatus::Routed),
            (7, EventStatus::Failed),
        ];
        for (seq, status) in finished {
            let mut p = Processed {
                seq,
                status,
                steps: Vec::new(),
                deliveries: Vec::new(),
                route_runs: Vec::new(),
                append: false,
            };
            if status == EventStatus::Routed {
                p.deliveries.push(delivery(DeliveryState::Delivered));
            }
            store.complete(Arc::new(vec![p])).await.expect("completes");
        }
        let replay = EventFilter {
            seq: Some(6),
            ..EventFilter::default()
        };
        assert_eq!(store.request_replay(replay, 10).await.expect("replays"), 1);
        let seqs = |status| {
            let store = store.clone();
            async move {
                let filter = EventFilter {
                    status: Some(status),
                    ..EventFilter::default()
                };
                let found = store.list_events(filter, 100).await.expect("lists");
                found.iter().map(|e| e.seq).collect::<Vec<_>>()
            }
        };
        let expected = |status| match status {
            EventStatus::Pending => vec![9, 8],
            EventStatus::Replay => vec![6],
            EventStatus::Routed => vec![1],
            EventStatus::Unrouted => vec![2],
            EventStatus::Dropped => vec![3],
            EventStatus::Retrying => vec![4],
            EventStatus::Failed => vec![7, 5],
        };
        // Before intake ever saved a watermark, and with one (pending lies above it).
        for watermark in [None, Some(7)] {
            if let Some(w) = watermark {
                store
                    .call(|r| Command::Watermark(w, r))
                    .await
                    .expect("saves");
            }
            for status in EventStatus::ALL {
                assert_eq!(seqs(status).await, expected(status), "{status:?}");
            }
        }

        // The plans: rare states through `routings_status`, pending as a rowid range.
        let conn = Connection::open(&path).expect("opens");
        let plan = |status| {
            let filter = EventFilter {
                status: Some(status),
                ..EventFilter::default()
            };
            let (sql, args) = reader::list_events_query(&conn, &filter, 50).expect("lookups");
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explains");
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .expect("plan");
            rows.map(|r| r.expect("a plan row"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        for status in [
            EventStatus::Failed,
            EventStatus::Retrying,
            EventStatus::Dropped,
            EventStatus::Unrouted,
            EventStatus::Replay,
        ] {
            let plan = plan(status);
            assert!(plan.contains("routings_status"), "{status:?}: {plan}");
            assert!(!plan.contains("SCAN e"), "{status:?}: {plan}");
        }
        let pending = plan(EventStatus::Pending);
        assert!(pending.contains("rowid>?"), "{pending}");
        drop(store);
        writer.join();
    }

    /// The search reads the narrow `subject_keys` (never every event), and an entry whose
    /// event is about something else (a hash collision) is not an answer.
    #[tokio::test]
    async fn a_subject_search_scans_only_subject_keys_and_confirms_each_candidate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.db");
        let (store, writer) = open(&path);
        for i in 0..20 {
            let subject = if i % 5 == 0 { "acct_1" } else { "acct_2" };
            store
                .ingest(about(&format!("e{i}"), subject))
                .await
                .expect("ingests");
        }
        store.ingest(event("none")).await.expect("ingests");
        drop(store);
        writer.join();
        let (store, writer) = open(&path);
        let conn = Connection::open(&path).expect("opens");
        // Seq 2 is about acct_2, seq 21 about nothing: both now collide with acct_1.
        let collision = super::super::event_filter::search_key("acct_1");
        conn.execute(
            "UPDATE subject_keys SET hash = ?1 WHERE seq = 2",
            [collision],
        )
        .expect("plants");
        conn.execute(
            "INSERT INTO subject_keys (seq, hash) VALUES (21, ?1)",
            [collision],
        )
        .expect("plants");
        let filter = EventFilter {
            subject: Some("acct_1".into()),
            ..EventFilter::default()
        };
        let found: Vec<i64> = store
            .list_events(filter.clone(), 50)
            .await
            .expect("lists")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(found, [16, 11, 6, 1]);

        let (sql, args) = reader::list_events_query(&conn, &filter, 50).expect("lookups");
        let plan = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explains")
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .expect("plan")
            .map(|r| r.expect("a plan row"))
            .collect::<Vec<_>>();
        assert!(plan.iter().any(|p| p == "SCAN subject_keys"), "{plan:#?}");
        // Events only by rowid: the candidates, the unsaved tail and the older ones.
        assert!(
            !plan
                .iter()
                .any(|p| p.starts_with("SCAN e") || p.starts_with("SCAN events")),
            "{plan:#?}"
        );
        drop(store);
        writer.join();
    }

    #[tokio::test]
    async fn the_backlog_gauges_seek_their_first_due_items_instead_of_sorting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.db");
        let (store, writer) = open(&path);
        let conn = Connection::open(&path).expect("opens");
        let plan = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", reader::BACKLOG_SQL))
            .expect("explains")
            .query_map([0], |r| r.get::<_, String>(3))
            .expect("plan")
            .map(|r| r.expect("a plan row"))
            .collect::<Vec<_>>();
        // A seek into the index ordered by due time: its first entry is the answer.
        let seeks = |table: &str, index: &str| {
            plan.iter().any(|p| {
                p.starts_with(&format!("SEARCH {table} USING "))
                    && p.ends_with(&format!("INDEX {index} (next_attempt_at>?)"))
            })
        };
        assert!(seeks("deliveries", "deliveries_due"), "{plan:#?}");
        assert!(seeks("route_runs", "route_runs_due"), "{plan:#?}");
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:#?}");
        assert!(!plan.iter().any(|p| p.starts_with("SCAN e")), "{plan:#?}");
        drop(store);
        writer.join();
    }

    fn run(state: RouteRunState) -> RouteRunUpdate {
        RouteRunUpdate {
            id: None,
            route: "r".into(),
            state,
            reason: "plugin said retry".into(),
            attempts: 1,
        }
    }

    #[tokio::test]
    async fn retention_deletes_only_finished_events_and_never_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, writer) = open(&dir.path().join("g.db"));
        let keys = [
            "delivered",
            "unrouted",
            "dropped",
            "waiting",
            "dead",
            "retry",
            "run-dead",
            "run-done",
            "pending",
            "newest",
        ];
        for key in keys {
            store.ingest(about(key, key)).await.expect("ingests");
        }
        // Reopened, so the subjects' search entries are saved before anything expires.
        drop(store);
        writer.join();
        let (store, writer) = open(&dir.path().join("g.db"));
        let routed = |seq, status, deliveries, route_runs| {
            Arc::new(vec![Processed {
                seq,
                status,
                steps: Vec::new(),
                deliveries,
                route_runs,
                append: false,
            }])
        };
        let done = [
            routed(
                1,
                EventStatus::Routed,
                vec![delivery(DeliveryState::Delivered)],
                vec![],
            ),
            routed(2, EventStatus::Unrouted, vec![], vec![]),
            routed(3, EventStatus::Dropped, vec![], vec![]),
            routed(
                4,
                EventStatus::Routed,
                vec![
                    delivery(DeliveryState::Delivered),
                    delivery(DeliveryState::Pending { next_attempt_ms: 0 }),
                ],
                vec![],
            ),
            routed(
                5,
                EventStatus::Routed,
                vec![delivery(DeliveryState::Dead {
                    reason: "gave up".into(),
                })],
                vec![],
            ),
            routed(
                6,
                EventStatus::Retrying,
                vec![],
                vec![run(RouteRunState::Retry { next_attempt_ms: 0 })],
            ),
            routed(
                7,
                EventStatus::Failed,
                vec![],
                vec![run(RouteRunState::Dead)],
            ),
            routed(
                8,
                EventStatus::Routed,
                vec![delivery(DeliveryState::Delivered)],
                vec![run(RouteRunState::Done)],
            ),
            routed(10, EventStatus::Unrouted, vec![], vec![]),
        ];
        for p in done {
            store.complete(p).await.expect("completes");
        }

        // Nothing is old enough yet.
        let now = super::super::unix_ms();
        let none = store
            .expire_events(now - 60_000, 0, 100)
            .await
            .expect("expires");
        assert_eq!(
            none,
            ExpiredEvents {
                deleted: 0,
                resume_after: None
            }
        );

        // Every event is older than a cutoff in the future; steps of 3 resume where they ended.
        let future = now + 60_000;
        let mut after = 0;
        let mut deleted = 0;
        let mut steps = 0;
        loop {
            let step = store
                .expire_events(future, after, 3)
                .await
                .expect("expires");
            deleted += step.deleted;
            steps += 1;
            match step.resume_after {
                Some(seq) => after = seq,
                None => break,
            }
        }
        // Nine candidates (the newest is not one): three full steps and an empty one.
        assert_eq!(
            (deleted, steps),
            (4, 4),
            "delivered, unrouted, dropped, run-done"
        );
        let conn = Connection::open(dir.path().join("g.db")).expect("opens");
        let left = |sql: &str| -> Vec<i64> {
            conn.prepare(sql)
                .expect("prepares")
                .query_map([], |r| r.get(0))
                .expect("queries")
                .collect::<Result<_, _>>()
                .expect("reads")
        };
        // Kept: waiting delivery, dead letter, plugin retry, dead plugin stage, not yet routed,
        // and the newest event although it is finished.
        assert_eq!(
            left("SELECT seq FROM events ORDER BY seq"),
            [4, 5, 6, 7, 9, 10]
        );
        assert_eq!(
            left("SELECT seq FROM routings ORDER BY seq"),
            [4, 5, 6, 7, 10]
        );
        assert_eq!(
            left("SELECT seq FROM subject_keys ORDER BY seq"),
            [4, 5, 6, 7, 9, 10]
        );
        assert_eq!(
            left("SELECT DISTINCT event_seq FROM deliveries ORDER BY 1"),
            [4, 5]
        );
        assert_eq!(
            left("SELECT DISTINCT event_seq FROM route_runs ORDER BY 1"),
            [6, 7]
        );
        assert!(store.event(1).await.expect("reads").is_none());
        // Dedup is not affected: the window, not retention, decides what is a retry.
        assert_eq!(
            store.ingest(event("delivered")).await.expect("ingests"),
            IngestOutcome::Duplicate
        );
        // Seq numbers are never reused.
        assert_eq!(
            store.ingest(event("after")).await.expect("ingests"),
            IngestOutcome::Stored { seq: 11 }
        );
        drop(store);
        writer.join();
    }
}
