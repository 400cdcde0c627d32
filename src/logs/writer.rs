//! The log writer: the request path hands records to a bounded channel and never waits; one
//! thread commits them to redb in batches (every 100 ms or 1,000 records), with the secondary
//! indexes, counters, analytics rollups and the per-gateway log cap. Shutdown drains the queue.

use foldhash::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{ReadableTable, StorageError, Table, WriteTransaction};

use super::bodies::{BodyTables, ChunkBuffers, ChunkBuilder};
use super::index::{IndexChanges, IndexKey};
use super::record::{LogEntry, LogMeta, decode_meta, encode_bodies_append, encode_meta, encode_meta_append};
use crate::store::rollups::{Rollup, merge_into};
use crate::store::{LogStrategy, Store, StoreError, insert_sorted, tables};

const BATCH_RECORDS: usize = 1_000;

/// Answers (in this process) whose bodies have ended and whose records wait for their worker's
/// finisher, which runs right after the server wrote the answer's last bytes (to keep the
/// record's making off the answer's critical path; see `gateway::stream::start_finisher`).
pub static ANSWERS_ENDING: AtomicU64 = AtomicU64::new(0);
const BATCH_WINDOW: Duration = Duration::from_millis(100);

enum Msg {
    Entry(Box<LogEntry>),
    Flush(SyncSender<()>),
    Shutdown,
}

/// Counters of the log pipeline (for `/metrics` and the admin UI).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records accepted into the queue.
    pub queued: AtomicU64,
    /// Records committed.
    pub written: AtomicU64,
    /// Records dropped because the queue was full (never silently).
    pub dropped: AtomicU64,
    /// Records refused by a gateway's `STOP_INSERTING` cap.
    pub capped: AtomicU64,
    /// Logs deleted by `DELETE_OLDEST`.
    pub evicted: AtomicU64,
    /// Batches that failed to commit.
    pub failed_batches: AtomicU64,
    /// Batches whose commit panicked (a damaged page); the writer carried on.
    pub panics: AtomicU64,
    /// Batches failed in a row (reset by a commit that succeeds); the writer backs off on it.
    pub failing_in_a_row: AtomicU64,
    /// Records the writer has taken off the queue, whatever became of them (stored, counted in
    /// analytics only, capped, or lost with a failed batch).
    pub processed: AtomicU64,
    /// Times the writer, running in the background (`SCHED_IDLE`), fell behind and ran as a
    /// normal thread until it caught up.
    pub catch_ups: AtomicU64,
}

impl SinkStats {
    /// Records waiting in the queue.
    pub fn depth(&self) -> u64 {
        self.queued.load(Relaxed).saturating_sub(self.processed.load(Relaxed))
    }
}

/// The request path's handle on the writer.
pub struct LogSink {
    tx: SyncSender<Msg>,
    capacity: usize,
    writer: std::thread::Thread,
    /// Pipeline counters.
    pub stats: Arc<SinkStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Per gateway: its stored-log cap and what happens at the cap, read from the live settings at
/// each batch (the writer sits below the control layer, so they hand it this lookup).
pub type LogCaps = Box<dyn Fn(&str) -> Option<(u64, Option<LogStrategy>)> + Send>;

/// Sees every record the writer takes (stored or not), a part of a batch at a time, on the
/// writer thread: the labeled metrics are counted here, off the request path.
pub type Observer = Box<dyn Fn(&[Box<LogEntry>]) + Send>;

/// Whether a gateway's stored logs are queued for export.
pub type ExportFilter = Box<dyn Fn(&str) -> bool + Send>;

/// What else the writer does with each record.
#[derive(Default)]
pub struct Hooks {
    /// Sees every record.
    pub observe: Option<Observer>,
    /// Queues the stored logs of the gateways it accepts for export.
    pub export: Option<ExportFilter>,
    /// Cluster mode: queues every stored log for PostgreSQL (see `logs::pg`).
    pub ship: bool,
}

/// What the writer thread works with.
struct Target {
    store: Store,
    caps: LogCaps,
    hooks: Hooks,
    /// The next export queue sequence number.
    next_seq: std::cell::Cell<u64>,
    /// The next PostgreSQL queue sequence number.
    next_ship: std::cell::Cell<u64>,
    /// The next number of a batch's rollups queued for PostgreSQL.
    next_rollups: std::cell::Cell<u64>,
    /// The plain bytes a body chunk gathers, as the last batch's chunks compressed.
    chunk_plain: std::cell::Cell<usize>,
    /// The body chunks' buffers, from one batch to the next.
    chunk_buffers: std::cell::Cell<ChunkBuffers>,
}

impl Target {
    fn new(store: Store, caps: LogCaps, hooks: Hooks) -> Self {
        let next = store.queue_next(crate::store::Queue::Export).unwrap_or(0);
        let next_ship = store.queue_next(crate::store::Queue::Ship).unwrap_or(0);
        let next_rollups = store.rollups_queue_next().unwrap_or(0);
        Self {
            store,
            caps,
            hooks,
            next_seq: std::cell::Cell::new(next),
            next_ship: std::cell::Cell::new(next_ship),
            next_rollups: std::cell::Cell::new(next_rollups),
            chunk_plain: std::cell::Cell::new(ChunkBuilder::default().plain_limit()),
            chunk_buffers: std::cell::Cell::new(ChunkBuffers::default()),
        }
    }
}

impl LogSink {
    /// Starts the writer thread with a queue of `capacity` records.
    pub fn start(store: Store, caps: LogCaps, capacity: usize, hooks: Hooks) -> std::io::Result<Arc<Self>> {
        let target = Target::new(store, caps, hooks);
        let (tx, rx) = sync_channel(capacity);
        let stats = Arc::new(SinkStats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("torii-log-writer".into())
            .spawn(move || run(&target, &rx, &thread_stats, capacity))?;
        let writer = thread.thread().clone();
        Ok(Arc::new(Self { tx, capacity, writer, stats, thread: Mutex::new(Some(thread)) }))
    }

    /// Queues a record without waiting; a full queue counts it as dropped.
    pub fn submit(&self, entry: LogEntry) {
        match self.tx.try_send(Msg::Entry(Box::new(entry))) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Relaxed);
                if self.stats.depth() > (self.capacity / 2) as u64 {
                    self.writer.unpark();
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Waits until everything queued before this call is committed (tests, shutdown, CLI).
    pub fn flush(&self) {
        // Answers whose last bytes are out but whose records are a poll away (see
        // `ANSWERS_ENDING`) are waited for, briefly, so a flush right after an answer has it.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while ANSWERS_ENDING.load(Relaxed) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
        let (done_tx, done_rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(done_tx)).is_ok() {
            self.writer.unpark();
            let _ = done_rx.recv();
        }
    }

    /// Drains the queue, commits, and stops the thread.
    pub fn close(&self) {
        let _ = self.tx.send(Msg::Shutdown);
        self.writer.unpark();
        let handle = self.thread.lock().map_or(None, |mut t| t.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// The batch window, doubled for each batch failed in a row (up to 3.2 s): a failing disk is not
/// hammered, and records wait in the bounded queue meanwhile.
fn backoff(failures: u64) -> Duration {
    BATCH_WINDOW * (1u32 << failures.min(5))
}

fn run(target: &Target, rx: &Receiver<Msg>, stats: &Arc<SinkStats>, capacity: usize) {
    // Boxed as they came: a record is not copied out of its box into the batch.
    let mut batch: Vec<Box<LogEntry>> = Vec::with_capacity(BATCH_RECORDS);
    let mut pacer = Pacer::new(crate::store::pace::background_allowed(), capacity);
    // Gives back what the allocator keeps once no record came for a whole look.
    let mut idle = crate::memory::IdleRelease::default();
    let mut looked = std::time::Instant::now();
    loop {
        // Sleep through the batch window (flush and close wake it early) rather than waking for
        // every record: the request path then never pays for waking this thread.
        std::thread::park_timeout(backoff(stats.failing_in_a_row.load(Relaxed)));
        crate::store::pace::rested();
        let mut waiters = Vec::new();
        let mut stop = false;
        loop {
            match rx.try_recv() {
                Ok(Msg::Entry(e)) => {
                    batch.push(e);
                    if batch.len() >= BATCH_RECORDS {
                        commit_batch(target, &mut batch, stats, &mut pacer, !waiters.is_empty() || stop);
                    }
                }
                Ok(Msg::Flush(done)) => waiters.push(done),
                Ok(Msg::Shutdown) => stop = true,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    stop = true;
                    break;
                }
            }
        }
        commit_batch(target, &mut batch, stats, &mut pacer, !waiters.is_empty() || stop);
        for w in waiters {
            let _ = w.send(());
        }
        if stop {
            return;
        }
        if looked.elapsed() >= crate::memory::LOOK_EVERY {
            looked = std::time::Instant::now();
            idle.look(stats.processed.load(Relaxed));
        }
    }
}

/// How the writer gives the core it shares with the request worker away.
struct Pacer {
    /// Whether it may run in the background ([`crate::store::pace::Mode::Background`]).
    background: bool,
    /// In the background, this many waiting records mean it has fallen behind.
    behind_at: u64,
    /// Fallen behind: a normal thread, paced by [`rest`], until an eighth of `behind_at` waits.
    catching_up: bool,
    capacity: usize,
}

impl Pacer {
    fn new(background: bool, capacity: usize) -> Self {
        // Eight batches, or an eighth of the queue when it is shorter: far from full, and a
        // background writer that is starved (the worker never idle) leaves it within a slice of
        // running once that many wait.
        let behind_at = (capacity / 8).clamp(1, 8 * BATCH_RECORDS) as u64;
        Self { background, behind_at, catching_up: false, capacity }
    }

    /// How the next batch runs; `urgent` (someone waits on a flush or close): at full speed.
    /// Out of the background the writer is paced by [`rest`]. In the background it has also
    /// fallen behind when a write waits for its transaction.
    fn mode(
        &mut self,
        stats: &Arc<SinkStats>,
        store: &Store,
        urgent: bool,
    ) -> (crate::store::pace::Mode, Option<crate::store::pace::Behind>) {
        use crate::store::pace::Mode;
        if urgent {
            return (Mode::Rest(Duration::ZERO), None);
        }
        if self.background {
            let depth = stats.depth();
            if self.catching_up && depth <= self.behind_at / 8 {
                self.catching_up = false;
            } else if !self.catching_up && depth > self.behind_at {
                self.fell_behind(stats);
            }
            if !self.catching_up {
                let (stats, store, behind_at, capacity) =
                    (Arc::clone(stats), store.clone(), self.behind_at, self.capacity);
                let behind =
                    move || (stats.depth() > behind_at || store.writes_waiting()).then(|| rest(&stats, capacity));
                return (Mode::Background, Some(Box::new(behind)));
            }
        }
        (Mode::Rest(rest(stats, self.capacity)), None)
    }

    fn fell_behind(&mut self, stats: &SinkStats) {
        self.catching_up = true;
        stats.catch_ups.fetch_add(1, Relaxed);
    }
}

/// How long the writer rests after each slice of a batch ([`pace`](crate::store::pace)) when it
/// cannot run in the background or has fallen behind there. While an eighth of the queue or less
/// waits, nine slices' time: the writer takes at most a tenth of the core it shares with the
/// request worker, a little less than a logged request's writing costs next to its proxying, and
/// holds the worker up at most a slice at a time. From there to half the queue the rest shortens
/// smoothly, the writer's share growing from a tenth to the whole core, so under a steady load
/// it settles at the share that keeps up with what arrives, not far past an eighth of the queue;
/// past half the queue, no rest at all (it runs on; the kernel shares the core between the two),
/// so resting never costs a record. The worker's requests wait longest while the writer takes
/// the most of the core, so the smallest share that keeps up is the one with the lowest tail: at
/// c=32 on one core, the added p99 of logged JSON was +0.55 to +0.95 ms with this, against +0.69
/// to +1.22 ms when the writer took a fifth of the core until it had caught up and +0.80 to +0.96
/// ms with an eighth.
fn rest(stats: &SinkStats, capacity: usize) -> Duration {
    rest_for(stats.depth(), capacity, crate::store::pace::requests_flowing())
}

/// [`rest`] for `depth` records waiting; no rest while no requests are coming
/// ([`requests_flowing`](crate::store::pace::requests_flowing)), when resting would only slow the
/// writer: a burst of logs on an idle core drains at full speed (the logs bench's ingest fell
/// from ~25,000 to 14,500 records a second with rests).
fn rest_for(depth: u64, capacity: usize, flowing: bool) -> Duration {
    if !flowing {
        return Duration::ZERO;
    }
    let (low, high) = ((capacity / 8) as u64, (capacity / 2) as u64);
    if depth <= low {
        return crate::store::pace::SLICE * 9;
    }
    if depth >= high {
        return Duration::ZERO;
    }
    // The share of the core, a tenth at `low` to all of it at `high`: (1 + 9x) / 10.
    let part = |n: u64| f64::from(u32::try_from(n).unwrap_or(u32::MAX));
    let x = part(depth - low) / part(high - low);
    crate::store::pace::SLICE.mul_f64(9.0 * (1.0 - x) / (1.0 + 9.0 * x))
}

/// How many records the [`Observer`] sees at once: a part is ~30 µs of counting, so the writer
/// can rest between parts (see [`pace`](crate::store::pace)).
const OBSERVED_AT_ONCE: usize = 128;

#[expect(clippy::vec_box, reason = "records arrive boxed; unboxing each copies it")]
fn commit_batch(
    target: &Target,
    batch: &mut Vec<Box<LogEntry>>,
    stats: &Arc<SinkStats>,
    pacer: &mut Pacer,
    urgent: bool,
) {
    if batch.is_empty() {
        return;
    }
    let (mode, behind) = pacer.mode(stats, &target.store, urgent);
    let n = batch.len() as u64;
    // A damaged page can make redb panic: the batch is lost (counted), the writer goes on.
    let result = crate::store::catch_quietly(|| {
        let (result, fell_behind) = crate::store::pace::run(mode, behind, || {
            // Counting a thousand records' metrics is ~0.3 ms: paced too, a part at a time.
            if let Some(observe) = &target.hooks.observe {
                for part in batch.chunks(OBSERVED_AT_ONCE) {
                    crate::store::pace::pace();
                    observe(part);
                }
            }
            let result = commit(target, batch, stats);
            // Freeing a thousand records is ~0.4 ms: paced as well, not in one go after the commit.
            while !batch.is_empty() {
                crate::store::pace::pace();
                batch.truncate(batch.len().saturating_sub(64));
            }
            result
        });
        if fell_behind {
            pacer.fell_behind(stats);
        }
        result
    })
    .unwrap_or_else(|| {
        stats.panics.fetch_add(1, Relaxed);
        Err(StoreError::Closed("the log writer met a damaged database page".into()))
    });
    stats.processed.fetch_add(n, Relaxed);
    match result {
        Ok(written) => {
            stats.written.fetch_add(written, Relaxed);
            stats.failing_in_a_row.store(0, Relaxed);
        }
        Err(e) => {
            stats.failed_batches.fetch_add(1, Relaxed);
            stats.failing_in_a_row.fetch_add(1, Relaxed);
            stats.dropped.fetch_add(n, Relaxed);
            tracing::error!(error = %e, records = n, "log batch failed to commit");
        }
    }
    batch.clear();
}

type CountTable<'t> = Table<'t, (&'static str, &'static str, &'static str), u64>;

fn bump(counts: &mut CountTable<'_>, key: (&str, &str, &str), delta: i64) -> Result<u64, StoreError> {
    let current = counts.get(key)?.map_or(0, |v| v.value());
    let next = current.saturating_add_signed(delta);
    if next == 0 {
        counts.remove(key)?;
    } else {
        counts.insert(key, next)?;
    }
    Ok(next)
}

/// Commits one batch; returns how many logs were stored.
fn commit(target: &Target, batch: &[Box<LogEntry>], stats: &SinkStats) -> Result<u64, StoreError> {
    target.store.write(|txn| {
        let mut written = 0;
        let mut logs = txn.open_table(tables::LOGS)?;
        let mut bodies = BodyTables::open(txn)?;
        let mut chunk = ChunkBuilder::new(target.chunk_plain.get(), target.chunk_buffers.take());
        let mut index = txn.open_table(tables::LOG_INDEX)?;
        let mut counts = txn.open_table(tables::LOG_COUNTS)?;
        let mut queue = txn.open_table(tables::EXPORT_QUEUE)?;
        let mut ship = txn.open_table(tables::SHIP_QUEUE)?;
        let mut seq = target.next_seq.get();
        let mut ship_seq = target.next_ship.get();
        let mut rollups: HashMap<(&str, u64, &str, &str), Rollup> = HashMap::default();
        // Index rows and counters change once per batch.
        let mut changes = IndexChanges::default();
        let mut totals: HashMap<&str, u64> = HashMap::default();
        let mut metas = MetaRows::default();
        for entry in batch {
            crate::store::pace::pace();
            let m = &entry.meta;
            let minute = u64::try_from(m.created_at / 60_000).unwrap_or(0);
            let key = (&*entry.gateway, minute, &*m.provider, m.model.as_deref().unwrap_or(""));
            m.add_to(rollups.entry(key).or_default());
            if !entry.store {
                continue;
            }
            let gateway = &*entry.gateway;
            let total = match totals.get(gateway) {
                Some(t) => *t,
                None => counts.get((gateway, "", ""))?.map_or(0, |v| v.value()),
            };
            if let Some(cap) = (target.caps)(gateway)
                && total >= cap.0
            {
                if cap.1 == Some(LogStrategy::DeleteOldest) {
                    // What this batch stored so far may be among the oldest: in the tables first.
                    metas.flush(&mut logs)?;
                    chunk.flush(&mut bodies)?;
                    let excess = total + 1 - cap.0;
                    let chunk = excess.max(cap.0 / 100).max(1);
                    let evicted = delete_oldest(&mut logs, &mut bodies, &mut changes, gateway, chunk)?;
                    stats.evicted.fetch_add(evicted, Relaxed);
                    totals.insert(gateway, total.saturating_sub(evicted));
                } else {
                    stats.capped.fetch_add(1, Relaxed);
                    continue;
                }
            }
            metas.push(gateway, m)?;
            if target.hooks.export.as_ref().is_some_and(|exported| exported(gateway)) {
                queue.insert(seq, (gateway, m.id))?;
                seq += 1;
            }
            if target.hooks.ship {
                ship.insert(ship_seq, (gateway, m.id))?;
                ship_seq += 1;
            }
            *totals.entry(gateway).or_insert(total) += 1;
            changes.add(gateway, m);
            if let Some(b) = &entry.bodies {
                chunk.push(&mut bodies, m.id, |out| Ok(encode_bodies_append(b, out)?))?;
            }
            written += 1;
        }
        metas.flush(&mut logs)?;
        chunk.flush(&mut bodies)?;
        target.chunk_plain.set(chunk.plain_limit());
        target.chunk_buffers.set(chunk.into_buffers());
        apply_changes(&mut index, &mut counts, changes)?;
        // Numbers of a batch that fails to commit are skipped, never reused out of order.
        target.next_seq.set(seq);
        target.next_ship.set(ship_seq);
        drop((logs, bodies, index, counts, queue, ship));
        if target.hooks.ship && !rollups.is_empty() {
            let batch: Vec<(&str, u64, &str, &str, &Rollup)> =
                rollups.iter().map(|((g, minute, p, m), r)| (*g, *minute, *p, *m, r)).collect();
            let n = target.next_rollups.get();
            txn.open_table(tables::SHIP_ROLLUPS)?.insert(n, postcard::to_stdvec(&batch)?.as_slice())?;
            target.next_rollups.set(n + 1);
        }
        merge_rollups(txn, rollups)?;
        Ok(written)
    })
}

/// How many bytes of metadata one cursor takes before it is closed and the next opened. A redb
/// cursor gathers what it is given, up to 1 MiB, and splices it into the tree in one go when it
/// is closed: a batch's metadata (~0.3 MiB for a thousand logs) was one splice of some 0.5 ms,
/// which the writer cannot rest in, on top of the buffer's growing. In parts this size each
/// splice is short; what a splice costs beyond its entries (the path above them) is paid a few
/// more times a batch.
const CURSOR_BYTES: usize = 64 * 1024;

/// The metadata rows of a batch, written together in key order ([`insert_sorted`]), a part
/// of [`CURSOR_BYTES`] at a time.
#[derive(Default)]
struct MetaRows<'a> {
    /// (gateway, id, where its encoded metadata is in `bytes`), in the order logs came.
    rows: Vec<(&'a str, u128, std::ops::Range<usize>)>,
    bytes: Vec<u8>,
}

impl<'a> MetaRows<'a> {
    fn push(&mut self, gateway: &'a str, meta: &LogMeta) -> Result<(), postcard::Error> {
        let start = self.bytes.len();
        encode_meta_append(meta, &mut self.bytes)?;
        self.rows.push((gateway, meta.id, start..self.bytes.len()));
        Ok(())
    }

    /// Writes the rows gathered so far, a gateway at a time at the end of its logs.
    fn flush(&mut self, logs: &mut Table<'_, (&'static str, u128), &'static [u8]>) -> Result<(), StorageError> {
        // Stable: a log given twice keeps its last row, as inserting in turn would.
        self.rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for group in self.rows.chunk_by(|a, b| a.0 == b.0) {
            let gateway = group[0].0;
            let rows: Vec<((&str, u128), &[u8])> =
                group.iter().map(|(g, id, at)| ((*g, *id), self.bytes.get(at.clone()).unwrap_or_default())).collect();
            let gap = Bound::Included(&(gateway, u128::MAX));
            let (mut start, mut bytes) = (0, 0);
            for (i, (_, value)) in rows.iter().enumerate() {
                if bytes > 0 && bytes + value.len() > CURSOR_BYTES {
                    insert_sorted(logs, gap, &rows[start..i])?;
                    (start, bytes) = (i, 0);
                }
                bytes += value.len();
            }
            insert_sorted(logs, gap, &rows[start..])?;
        }
        self.rows.clear();
        self.bytes.clear();
        Ok(())
    }
}

fn merge_rollups(txn: &WriteTransaction, rollups: HashMap<(&str, u64, &str, &str), Rollup>) -> Result<(), StoreError> {
    let mut hours: HashMap<(&str, u64, &str, &str), Rollup> = HashMap::default();
    for ((gateway, minute, provider, model), r) in &rollups {
        hours.entry((gateway, minute / 60, provider, model)).or_default().merge(r);
    }
    merge_into(&mut txn.open_table(tables::ANALYTICS)?, rollups)?;
    merge_into(&mut txn.open_table(tables::ANALYTICS_HOURLY)?, hours)
}

/// Inserts one log's metadata; its index rows and counts go into `changes`.
pub(crate) fn insert_log<'a>(
    logs: &mut Table<'_, (&'static str, u128), &'static [u8]>,
    changes: &mut IndexChanges<'a>,
    gateway: &'a str,
    meta: &'a LogMeta,
) -> Result<(), StoreError> {
    logs.insert((gateway, meta.id), encode_meta(meta)?.as_slice())?;
    changes.add(gateway, meta);
    Ok(())
}

/// Removes one log's metadata; its index rows and counts go into `changes` (its bodies are
/// removed with the others', [`BodyTables::remove`]).
pub(crate) fn remove_log<'a>(
    logs: &mut Table<'_, (&'static str, u128), &'static [u8]>,
    changes: &mut IndexChanges<'a>,
    gateway: &'a str,
    meta: &LogMeta,
) -> Result<(), StoreError> {
    logs.remove((gateway, meta.id))?;
    changes.remove(gateway, meta);
    Ok(())
}

/// Writes the index rows and counters `changes` holds.
pub(crate) fn apply_changes(
    index: &mut Table<'_, IndexKey<'static>, &'static [u8]>,
    counts: &mut CountTable<'_>,
    changes: IndexChanges,
) -> Result<(), StoreError> {
    for ((gateway, field, value), delta) in changes.deltas() {
        if delta != 0 {
            bump(counts, (gateway, field, value), delta)?;
        }
    }
    for (gateway, delta) in changes.log_deltas() {
        if delta != 0 {
            bump(counts, (gateway, "", ""), delta)?;
        }
    }
    changes.apply(index)?;
    Ok(())
}

fn delete_oldest<'a>(
    logs: &mut Table<'_, (&'static str, u128), &'static [u8]>,
    bodies: &mut BodyTables<'_>,
    changes: &mut IndexChanges<'a>,
    gateway: &'a str,
    n: u64,
) -> Result<u64, StoreError> {
    let mut victims = Vec::new();
    for row in logs.range((gateway, 0u128)..=(gateway, u128::MAX))? {
        let (_, value) = row?;
        if let Some(meta) = decode_meta(value.value()) {
            victims.push(meta);
        }
        if victims.len() as u64 >= n {
            break;
        }
    }
    for meta in &victims {
        remove_log(logs, changes, gateway, meta)?;
    }
    bodies.remove(&victims.iter().map(|m| m.id).collect::<Vec<_>>())?;
    Ok(victims.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Settings;
    use crate::logs::record::tests::sample;
    use redb::{ReadableDatabase, ReadableTableMetadata};

    /// Whether two rests are the same within a microsecond (the share is computed in floats).
    fn about(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) <= Duration::from_micros(1)
    }

    /// While an eighth of its queue or less waits the writer takes a tenth of the core; from
    /// there its rests shorten smoothly, never growing as the queue fills, to none at half the
    /// queue, so resting never fills it.
    #[test]
    fn rests_less_as_the_queue_fills() {
        use crate::store::pace::SLICE;
        let stats = SinkStats::default();
        let _serving = crate::store::pace::serving();
        let at = |depth: u64| {
            stats.queued.store(depth, Relaxed);
            rest(&stats, 1_000)
        };
        assert_eq!(at(0), SLICE * 9);
        assert_eq!(at(125), SLICE * 9);
        assert!(at(126) < SLICE * 9 && at(126) > SLICE * 8, "behind: a little more of the core");
        // A third of the way to half the queue: four tenths of the core, a rest of 1.5 slices.
        assert!(about(at(250), SLICE.mul_f64(1.5)), "{:?}", at(250));
        assert!(at(499) > Duration::ZERO && at(499) < SLICE / 50);
        assert_eq!(at(500), Duration::ZERO, "half the queue waits: no rest");
        assert_eq!(at(900), Duration::ZERO);
        let rests = (0..=1_000).map(at).collect::<Vec<_>>();
        assert!(rests.windows(2).all(|w| w[1] <= w[0]), "never a longer rest for a longer queue");
        stats.queued.store(400, Relaxed);
        stats.processed.store(400, Relaxed);
        assert_eq!(rest(&stats, 1_000), SLICE * 9, "what is written no longer waits");
        // No request served: nothing to rest for, whatever waits.
        stats.processed.store(0, Relaxed);
        for depth in [0, 125, 250, 499] {
            assert_eq!(rest_for(depth, 1_000, false), Duration::ZERO);
            assert_eq!(rest_for(depth, 1_000, true), at(depth));
        }
    }

    /// In the background the writer falls behind past eight batches waiting (or an eighth of a
    /// shorter queue), or while a write waits for its transaction; it is a normal thread until an
    /// eighth of that waits, and counts each time. A flush or close runs at full speed. Without a
    /// background it rests as before.
    #[test]
    fn the_background_writer_catches_up_once_behind() {
        use crate::store::pace::Mode;
        // A request being served (the rests protect it).
        let _serving = crate::store::pace::serving();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        let stats = Arc::new(SinkStats::default());
        let mut pacer = Pacer::new(true, 100_000);
        assert_eq!(pacer.behind_at, 8_000);
        assert_eq!(Pacer::new(true, 1_000).behind_at, 125);
        let at = |depth: u64, pacer: &mut Pacer, urgent: bool| {
            stats.queued.store(depth, Relaxed);
            let (mode, behind) = pacer.mode(&stats, &store, urgent);
            (mode, behind.map(|b| b()))
        };
        let background = (Mode::Background, Some(None));
        let full_speed = (Mode::Rest(Duration::ZERO), None);
        let resting_mode = (Mode::Rest(crate::store::pace::SLICE * 9), None);
        assert_eq!(at(8_000, &mut pacer, false), background);
        assert_eq!(at(100, &mut pacer, true), full_speed, "a flush waits");
        assert_eq!(stats.catch_ups.load(Relaxed), 0);
        assert_eq!(at(8_001, &mut pacer, false), resting_mode, "behind: a normal thread, resting while it can");
        assert_eq!(stats.catch_ups.load(Relaxed), 1);
        let shorter_rests = (Mode::Rest(crate::store::pace::SLICE.mul_f64(1.5)), None);
        assert_eq!(at(25_000, &mut pacer, false), shorter_rests, "past an eighth of the queue: shorter rests");
        assert_eq!(at(50_001, &mut pacer, false), full_speed, "half the queue waits");
        assert_eq!(at(1_001, &mut pacer, false), resting_mode, "not caught up yet");
        assert_eq!(at(1_000, &mut pacer, false), background);
        // In the background the check is the live depth, and whether a write waits.
        let (_, behind) = pacer.mode(&stats, &store, false);
        let behind = behind.unwrap();
        stats.queued.store(8_001, Relaxed);
        assert_eq!(behind(), Some(crate::store::pace::SLICE * 9));
        stats.queued.store(25_000, Relaxed);
        assert_eq!(behind(), Some(crate::store::pace::SLICE.mul_f64(1.5)));
        stats.queued.store(50_001, Relaxed);
        assert_eq!(behind(), Some(Duration::ZERO));
        stats.queued.store(0, Relaxed);
        assert_eq!(behind(), None);
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (taken, is_taken) = std::sync::mpsc::channel::<()>();
        let holder = store.clone();
        let holding = std::thread::spawn(move || {
            holder.write(|_| -> Result<(), StoreError> {
                taken.send(()).unwrap();
                released.recv().unwrap();
                Ok(())
            })
        });
        is_taken.recv().unwrap();
        let waiter = store.clone();
        let waiting = std::thread::spawn(move || waiter.write(|_| -> Result<(), StoreError> { Ok(()) }));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while behind().is_none() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(behind(), Some(crate::store::pace::SLICE * 9), "a write waits behind the writer's transaction");
        release.send(()).unwrap();
        holding.join().unwrap().unwrap();
        waiting.join().unwrap().unwrap();
        assert_eq!(behind(), None);
        // Fallen behind inside a batch: counted, and caught up the same way.
        pacer.fell_behind(&stats);
        assert_eq!(stats.catch_ups.load(Relaxed), 2);
        assert_eq!(at(5_000, &mut pacer, false), resting_mode);
        let mut resting = Pacer::new(false, 1_000);
        assert_eq!(at(100, &mut resting, false), resting_mode);
        assert_eq!(at(100, &mut resting, true), full_speed);
        assert_eq!(at(250, &mut resting, false), shorter_rests);
        assert_eq!(at(501, &mut resting, false), full_speed);
    }

    /// The observer (the labeled metrics) sees a batch a part at a time, inside the paced run,
    /// and sees every record once; the batch is stored whole.
    #[test]
    fn the_observer_sees_a_batch_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        crate::control::ensure_default_gateway(&store).unwrap();
        let parts = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&parts);
        let observe: Observer = Box::new(move |part| {
            let ids = part.iter().map(|e| e.meta.id).collect::<Vec<_>>();
            seen.lock().unwrap().push(ids);
        });
        let caps: LogCaps = Box::new(|_| None);
        let target = Target::new(store.clone(), caps, Hooks { observe: Some(observe), ..Hooks::default() });
        let stats = Arc::new(SinkStats::default());
        let mut batch = (1..=300)
            .map(|id| {
                Box::new(LogEntry {
                    gateway: "default".into(),
                    meta: sample(id),
                    bodies: None,
                    store: true,
                    trace: None,
                })
            })
            .collect::<Vec<_>>();
        stats.queued.store(300, Relaxed);
        commit_batch(&target, &mut batch, &stats, &mut Pacer::new(false, 1_000), false);
        let parts = parts.lock().unwrap();
        assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), [128, 128, 44]);
        assert_eq!(parts.concat(), (1..=300).collect::<Vec<u128>>());
        assert_eq!(stats.written.load(Relaxed), 300);
        let read = store.db().unwrap().begin_read().unwrap();
        let logs = read.open_table(crate::store::tables::LOGS).unwrap();
        assert_eq!(logs.len().unwrap(), 300);
    }

    /// A writer on a new store in a temporary directory (kept while the first value lives).
    fn temp_sink(capacity: usize) -> (tempfile::TempDir, Arc<Settings>, Arc<LogSink>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        crate::control::ensure_default_gateway(&store).unwrap();
        let settings = Arc::new(Settings::load(store).unwrap());
        let sink = settings.start_log_sink(capacity, Hooks::default()).unwrap();
        (dir, settings, sink)
    }

    #[test]
    fn records_counted_only_in_analytics_leave_the_queue_depth() {
        let (_dir, _settings, sink) = temp_sink(100);
        for i in 0..10 {
            let meta = sample(i + 1);
            sink.submit(LogEntry { gateway: "default".into(), meta, bodies: None, store: i % 2 == 0, trace: None });
        }
        sink.flush();
        // A queue that never drains would wake the writer for every record from then on.
        assert_eq!(sink.stats.depth(), 0);
        assert_eq!(sink.stats.written.load(Relaxed), 5);
        sink.close();
    }

    /// Logs come to the writer out of id order (a long answer ends after later ones), some
    /// older than logs already stored, in two gateways: each is stored with its own metadata
    /// and bodies.
    #[test]
    fn logs_out_of_order_and_older_than_stored_ones_are_all_kept() {
        let (_dir, settings, sink) = temp_sink(1000);
        let body = |id: u128| super::super::record::LogBodies {
            request_body: format!("request {id}").into_bytes().into(),
            response_body: format!("answer {id}").into_bytes(),
            ..Default::default()
        };
        let submit = |ids: &[u128]| {
            for &id in ids {
                let gateway = if id % 3 == 0 { "other" } else { "default" };
                let meta = LogMeta { event_id: format!("ev-{id}").into(), ..sample(id) };
                sink.submit(LogEntry {
                    gateway: gateway.into(),
                    meta,
                    bodies: Some(body(id)),
                    store: true,
                    trace: None,
                });
            }
            sink.flush();
        };
        submit(&[50, 40, 60, 45, 55]);
        submit(&[70, 10, 65, 20, 48, 90, 30, 80, 44]);
        // A batch whose metadata takes several cursors (`CURSOR_BYTES`), out of order, with logs
        // older than stored ones.
        let many: Vec<u128> = (0..800).map(|i| 100 + (i * 337) % 800).chain([1, 2, 3]).collect();
        submit(&many);
        let txn = settings.store().db().unwrap().begin_read().unwrap();
        let logs = txn.open_table(tables::LOGS).unwrap();
        let bodies = super::super::bodies::BodyReader::open(&txn).unwrap();
        let mut stored = Vec::new();
        for row in logs.iter().unwrap() {
            let (key, value) = row.unwrap();
            let (gateway, id) = key.value();
            let meta = decode_meta(value.value()).unwrap();
            assert_eq!((meta.id, &*meta.event_id), (id, format!("ev-{id}").as_str()));
            assert_eq!(gateway, if id % 3 == 0 { "other" } else { "default" });
            let got = bodies.get(id).unwrap().unwrap().decode().unwrap();
            assert_eq!(got, body(id));
            stored.push((gateway.to_string(), id));
        }
        let mut want: Vec<(String, u128)> = [50, 40, 60, 45, 55, 70, 10, 65, 20, 48, 90, 30, 80, 44]
            .iter()
            .chain(&many)
            .map(|id| ((if id % 3 == 0 { "other" } else { "default" }).to_string(), *id))
            .collect();
        want.sort();
        assert_eq!(stored, want);
        sink.close();
    }

    #[test]
    fn the_writer_keeps_minute_and_hour_rollups_in_step() {
        let (_dir, settings, sink) = temp_sink(100);
        let hour_ms = 3_600_000_i64;
        let t0 = 1_780_000_000_000 - 1_780_000_000_000 % hour_ms;
        // Three whole hours of traffic, some logs stored, some only counted.
        for (i, offset_min) in [0_i64, 1, 59, 60, 61, 119, 120, 179].iter().enumerate() {
            let mut meta = sample(u128::try_from(i + 1).unwrap());
            meta.created_at = t0 + offset_min * 60_000;
            meta.tokens_in = 10;
            sink.submit(LogEntry { gateway: "default".into(), meta, bodies: None, store: i % 2 == 0, trace: None });
        }
        sink.flush();
        let (start, end) = (t0 / 1000, t0 / 1000 + 3 * 3600 - 1);
        let hourly = crate::analytics::report(settings.store(), "default", start, end, 3600).unwrap();
        let by_minute = crate::analytics::report(settings.store(), "default", start, end, 60).unwrap();
        assert_eq!(hourly.totals.requests, 8);
        let (a, b) = (&hourly.totals, &by_minute.totals);
        assert_eq!(
            (a.requests, a.tokens_in, a.tokens_out, a.duration_ms),
            (b.requests, b.tokens_in, b.tokens_out, b.duration_ms)
        );
        assert!((a.cost - b.cost).abs() < 1e-12, "cost summed in another order: {} vs {}", a.cost, b.cost);
        let counts: Vec<u64> = hourly.series.iter().map(|(_, r)| r.requests).collect();
        assert_eq!(counts, [3, 3, 2]);
        sink.close();
    }
}
