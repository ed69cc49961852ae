//! A running job's lines on their way to live followers and to the store.
//!
//! Lines go to live followers as soon as they are read, and to the store from
//! a task of their own, so neither a follower nor the child waits for an
//! SQLite write. Until it is stored, a line stays in the job's `unstored`
//! buffer: a follower that subscribes meanwhile finds it there.
//!
//! Why a follower sees every line exactly once, in order. `publish` sends a
//! line and appends it to `unstored` under one lock, and `subscribe` takes its
//! receiver under the same lock; the writer removes a line from `unstored`
//! only after the store has it. A follower subscribes at a moment S, replays
//! the store, and just before its last store read (the one that finds nothing
//! more), at a moment T after S, copies what is still unstored. Every line was
//! either published after S (its receiver gets it), or published before S and
//! still unstored at T (it is in the copy), or removed from `unstored` before
//! T, so stored before the last read (the replay found it). Lines are numbered
//! 1, 2, ... and stored in order, so the store holds 1..=k, the copy
//! k'+1..=m with k' <= k, and the receiver every line published after S: the
//! follower emits the stored lines, then the copy, then the live ones,
//! skipping every number it has emitted, which leaves no gap and no repeat. A
//! follower that falls behind the broadcast buffer (`Lagged`) replays the
//! store again the same way: the same argument with S the moment it lagged.
//! (The copy is taken at the end of the replay, not at S, so a follower holds
//! it only during one store read, however long the replay.)
//!
//! When the store cannot write (a full or failing disk), the job does not
//! wait for it: the newest lines stay in `unstored`, up to `HELD_MAX_BYTES`,
//! the oldest past that are dropped, and once the store writes again a
//! system line takes the number of the last dropped one and says how many
//! were lost. Live followers saw every line; a replay has that gap.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Notify, broadcast};

use crate::store::{JobId, JobStore, LogLine};

/// What live followers of a job receive: its lines, then its end.
#[derive(Clone, Debug)]
pub enum JobEvent {
    Line(LogLine),
    End,
}

/// Live lines buffered per follower before it must catch up from the store.
const EVENT_BUFFER: usize = 1024;
/// Lines handed to followers but not stored yet, past which the job stops
/// reading its child until the store catches up (the child then waits on its
/// pipe: nothing is lost). Small, a little over one store batch: every
/// follower near the end of its replay holds a copy of them.
const UNSTORED_MAX_BYTES: usize = 64 * 1024;
/// Most lines stored in one transaction: small enough that a job record
/// written meanwhile does not wait long for the connection.
const STORE_BATCH: usize = 512;
/// Lines kept while the store cannot write: the newest, up to this many bytes.
const HELD_MAX_BYTES: usize = 1 << 20;
/// How often the writer tries the store again after a failed write.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// One running job's live lines.
pub(crate) struct LiveLog {
    inner: Mutex<Inner>,
    /// The writer has lines to store (or the job has ended).
    work: Notify,
    /// The writer stored some lines.
    stored: Notify,
}

struct Inner {
    events: broadcast::Sender<JobEvent>,
    /// Published, not stored yet, in order.
    unstored: VecDeque<LogLine>,
    unstored_bytes: usize,
    /// No more lines will come: the writer ends once `unstored` is empty.
    closed: bool,
    /// Why the store's last write failed; cleared by the next that works.
    fault: Option<String>,
    /// A write of the front of `unstored` is under way (nothing is dropped).
    writing: bool,
    /// Lines dropped while the store could not write.
    lost: Lost,
}

/// Lines dropped unstored: how many, and the numbers of the first and last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Lost {
    count: u64,
    first: u64,
    last: u64,
}

impl Lost {
    /// The system line stored in place of the last dropped line.
    fn marker(&self, fault: &str) -> LogLine {
        LogLine {
            n: self.last,
            stream: crate::store::Stream::System,
            text: format!(
                "{} lines of output ({}-{}) could not be stored: {fault}",
                self.count, self.first, self.last
            ),
        }
    }
}

impl LiveLog {
    /// A job's live log, with the task that stores its lines.
    pub fn start(store: Arc<dyn JobStore>, job_id: JobId) -> Arc<LiveLog> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let live = Arc::new(LiveLog {
            inner: Mutex::new(Inner {
                events,
                unstored: VecDeque::new(),
                unstored_bytes: 0,
                closed: false,
                fault: None,
                writing: false,
                lost: Lost::default(),
            }),
            work: Notify::new(),
            stored: Notify::new(),
        });
        tokio::spawn(live.clone().store_lines(store, job_id));
        live
    }

    /// Hands lines (numbered in order) to live followers and to the writer.
    pub fn publish(&self, lines: Vec<LogLine>) {
        let mut inner = self.inner.lock().unwrap();
        for line in lines {
            // No follower is fine.
            let _ = inner.events.send(JobEvent::Line(line.clone()));
            inner.unstored_bytes += line.text.len();
            inner.unstored.push_back(line);
        }
        if inner.fault.is_some() && !inner.writing {
            inner.drop_oldest();
        }
        drop(inner);
        self.work.notify_one();
    }

    /// Waits while the writer is too far behind (not while the store cannot
    /// write: then the oldest lines are dropped instead).
    pub async fn room(&self) {
        self.wait_until(|inner| inner.unstored_bytes <= UNSTORED_MAX_BYTES || inner.fault.is_some())
            .await
    }

    /// Waits until every published line is in the store.
    pub async fn all_stored(&self) {
        self.wait_until(|inner| inner.unstored.is_empty() && inner.lost.count == 0)
            .await
    }

    /// Waits until every published line is in the store, or the store
    /// cannot write: then the job ends without waiting for the disk.
    pub async fn settled(&self) -> Result<(), String> {
        self.wait_until(|inner| inner.unstored.is_empty() || inner.fault.is_some())
            .await;
        match &self.inner.lock().unwrap().fault {
            Some(fault) => Err(fault.clone()),
            None => Ok(()),
        }
    }

    async fn wait_until(&self, done: impl Fn(&Inner) -> bool) {
        loop {
            // Registered before the check: a wake-up in between is not lost.
            let stored = self.stored.notified();
            if done(&self.inner.lock().unwrap()) {
                return;
            }
            stored.await;
        }
    }

    /// No more lines: the writer stores what is left and ends.
    pub fn close(&self) {
        self.inner.lock().unwrap().closed = true;
        self.work.notify_one();
    }

    /// Tells live followers the job has ended.
    pub fn end(&self) {
        let _ = self.inner.lock().unwrap().events.send(JobEvent::End);
    }

    /// A receiver of what is published from now on: see the module's comment.
    fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.lock().unwrap().events.subscribe()
    }

    /// The lines numbered above `after` that are not stored yet.
    fn unstored_after(&self, after: u64) -> Vec<LogLine> {
        let inner = self.inner.lock().unwrap();
        let from = inner.unstored.partition_point(|line| line.n <= after);
        inner.unstored.range(from..).cloned().collect()
    }

    /// The writer: stores lines from the front of `unstored`, in order, then
    /// removes them from it. After a failed write it tries again every
    /// `RETRY`, first with the line that says what was dropped meanwhile.
    async fn store_lines(self: Arc<Self>, store: Arc<dyn JobStore>, job_id: JobId) {
        loop {
            let work = self.work.notified();
            let batch = {
                let mut inner = self.inner.lock().unwrap();
                let mut batch: Vec<LogLine> = Vec::new();
                if inner.lost.count > 0 {
                    let fault = inner.fault.clone().unwrap_or_default();
                    batch.push(inner.lost.marker(&fault));
                }
                batch.extend(inner.unstored.iter().take(STORE_BATCH).cloned());
                if batch.is_empty() && inner.closed {
                    return;
                }
                inner.writing = !batch.is_empty();
                batch
            };
            if batch.is_empty() {
                work.await;
                continue;
            }
            let last = batch.last().map_or(0, |line| line.n);
            let written = store.append_log(job_id, batch).await;
            let failed = {
                let mut inner = self.inner.lock().unwrap();
                let inner = &mut *inner;
                inner.writing = false;
                match written {
                    Ok(()) => {
                        if inner.fault.take().is_some() {
                            tracing::info!(job_id = %job_id, "the job store writes again");
                        }
                        inner.lost = Lost::default();
                        while inner.unstored.front().is_some_and(|line| line.n <= last) {
                            let line = inner.unstored.pop_front().expect("a front line");
                            inner.unstored_bytes -= line.text.len();
                        }
                        false
                    }
                    Err(err) => {
                        if inner.fault.is_none() {
                            tracing::error!(job_id = %job_id, error = %err, "could not store job log lines: keeping the newest in memory");
                        }
                        inner.fault = Some(store_fault(&err));
                        inner.drop_oldest();
                        true
                    }
                }
            };
            self.stored.notify_waiters();
            if failed {
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

impl Inner {
    /// Drops the oldest unstored lines past `HELD_MAX_BYTES`, counting them.
    fn drop_oldest(&mut self) {
        while self.unstored_bytes > HELD_MAX_BYTES {
            let Some(line) = self.unstored.pop_front() else {
                break;
            };
            self.unstored_bytes -= line.text.len();
            if self.lost.count == 0 {
                self.lost.first = line.n;
            }
            self.lost.count += 1;
            self.lost.last = line.n;
        }
    }
}

/// What a failed store write says to a reader of the log.
fn store_fault(err: &crate::store::StoreError) -> String {
    match err.storage_fault() {
        Some(fault) => format!("{} under the job store", fault.describe()),
        None => err.to_string(),
    }
}

/// One follower of a job's log from a line number on: the stored lines, then
/// the live ones until the job ends, each once and in order.
pub struct Follower {
    store: Arc<dyn JobStore>,
    id: JobId,
    /// The last line number given out.
    last: u64,
    /// While the job runs in this process.
    live: Option<Live>,
    /// Read from the store until it has nothing after `last`.
    replaying: bool,
    /// The last store read found less than a page: the next may be the last.
    near_end: bool,
    ready: VecDeque<LogLine>,
}

/// Lines read from the store at a time. A follower holds up to a page, so
/// the page size times the followers is memory the server holds.
const PAGE: usize = 256;

struct Live {
    events: broadcast::Receiver<JobEvent>,
    /// Weak: a follower must not keep a job's channel open after it ended.
    log: Weak<LiveLog>,
}

impl Follower {
    /// Subscribes now (before anything is read from the store).
    pub(crate) fn new(
        store: Arc<dyn JobStore>,
        id: JobId,
        after: u64,
        live: Option<&Arc<LiveLog>>,
    ) -> Follower {
        let live = live.map(|log| Live {
            events: log.subscribe(),
            log: Arc::downgrade(log),
        });
        Follower {
            store,
            id,
            last: after,
            live,
            replaying: true,
            near_end: false,
            ready: VecDeque::new(),
        }
    }

    /// The next line, or `None` once the job has ended and every line after
    /// `after` was given.
    pub async fn next(&mut self) -> Option<LogLine> {
        loop {
            while let Some(line) = self.ready.pop_front() {
                if line.n > self.last {
                    self.last = line.n;
                    return Some(line);
                }
            }
            if self.replaying {
                self.replay_page().await;
                continue;
            }
            let live = self.live.as_mut()?;
            match live.events.recv().await {
                Ok(JobEvent::Line(line)) => self.ready.push_back(line),
                // The job's lines are all stored by now: a last look there
                // (after `Closed`, the job's task died and may have lagged us).
                Ok(JobEvent::End) | Err(broadcast::error::RecvError::Closed) => {
                    self.live = None;
                    self.replaying = true;
                }
                // Fell behind the broadcast buffer: the store again.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.replaying = true;
                    self.near_end = false;
                }
            }
        }
    }

    /// One store read of the replay; the last also takes the lines not
    /// stored yet, copied just before it (see the module's comment).
    async fn replay_page(&mut self) {
        let unstored = match (&self.live, self.near_end) {
            (Some(live), true) => live.log.upgrade().map(|log| log.unstored_after(self.last)),
            _ => None,
        };
        let lines = self
            .store
            .read_log(self.id, self.last, PAGE)
            .await
            .unwrap_or_default();
        if lines.is_empty() && (self.near_end || self.live.is_none()) {
            self.replaying = false;
            self.ready.extend(unstored.unwrap_or_default());
        } else {
            self.near_end = lines.len() < PAGE;
            self.ready.extend(lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use serde_json::{Value, json};
    use time::OffsetDateTime;

    use super::*;
    use crate::store::{
        ClusterEvent, Completion, Job, JobFilter, JobKind, JobPage, MemoryStore, ScheduleRecord,
        StoreError, Stream,
    };

    /// A memory store whose log appends take a while, so lines wait in the
    /// unstored buffer while followers subscribe.
    struct SlowStore(MemoryStore);

    #[async_trait]
    impl JobStore for SlowStore {
        async fn insert(&self, job: Job) -> Result<(), StoreError> {
            self.0.insert(job).await
        }
        async fn mark_running(
            &self,
            id: JobId,
            at: OffsetDateTime,
            pid: Option<u32>,
            pid_start: Option<u64>,
        ) -> Result<(), StoreError> {
            self.0.mark_running(id, at, pid, pid_start).await
        }
        async fn complete(
            &self,
            id: JobId,
            completion: Completion,
            at: OffsetDateTime,
        ) -> Result<(), StoreError> {
            self.0.complete(id, completion, at).await
        }
        async fn set_result(&self, id: JobId, result: Value) -> Result<(), StoreError> {
            self.0.set_result(id, result).await
        }
        async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
            self.0.get(id).await
        }
        async fn list(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
            self.0.list(filter).await
        }
        async fn append_log(&self, id: JobId, lines: Vec<LogLine>) -> Result<(), StoreError> {
            tokio::time::sleep(Duration::from_micros(300 + lines.len() as u64 % 700)).await;
            self.0.append_log(id, lines).await
        }
        async fn read_log(
            &self,
            id: JobId,
            after: u64,
            limit: usize,
        ) -> Result<Vec<LogLine>, StoreError> {
            tokio::task::yield_now().await;
            self.0.read_log(id, after, limit).await
        }
        async fn interrupt_unfinished(&self, at: OffsetDateTime) -> Result<Vec<Job>, StoreError> {
            self.0.interrupt_unfinished(at).await
        }
        async fn add_event(&self, event: ClusterEvent) -> Result<u64, StoreError> {
            self.0.add_event(event).await
        }
        async fn events(
            &self,
            workspace: &str,
            limit: usize,
        ) -> Result<Vec<ClusterEvent>, StoreError> {
            self.0.events(workspace, limit).await
        }
        async fn put_schedule(&self, schedule: ScheduleRecord) -> Result<(), StoreError> {
            self.0.put_schedule(schedule).await
        }
        async fn schedule(&self, workspace: &str) -> Result<Option<ScheduleRecord>, StoreError> {
            self.0.schedule(workspace).await
        }
        async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
            self.0.schedules().await
        }
        async fn delete_schedule(&self, workspace: &str) -> Result<bool, StoreError> {
            self.0.delete_schedule(workspace).await
        }
        async fn put_record(&self, kind: &str, key: &str, value: Value) -> Result<(), StoreError> {
            self.0.put_record(kind, key, value).await
        }
        async fn record(&self, kind: &str, key: &str) -> Result<Option<Value>, StoreError> {
            self.0.record(kind, key).await
        }
        async fn records(&self, kind: &str) -> Result<Vec<(String, Value)>, StoreError> {
            self.0.records(kind).await
        }
        async fn delete_record(&self, kind: &str, key: &str) -> Result<bool, StoreError> {
            self.0.delete_record(kind, key).await
        }
    }

    fn line(n: u64) -> LogLine {
        LogLine {
            n,
            stream: Stream::Stdout,
            text: format!("line {n}"),
        }
    }

    /// Every line from `after + 1` to `total`, once each, in order.
    fn assert_complete(seen: &[LogLine], after: u64, total: u64) {
        let numbers: Vec<u64> = seen.iter().map(|l| l.n).collect();
        let expected: Vec<u64> = (after + 1..=total).collect();
        assert_eq!(numbers.len(), expected.len(), "a line missing or repeated");
        assert_eq!(numbers, expected);
        assert!(seen.iter().all(|l| l.text == format!("line {}", l.n)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn followers_subscribing_during_output_see_every_line_once_in_order() {
        const TOTAL: u64 = 30_000;
        let store: Arc<dyn JobStore> = Arc::new(SlowStore(MemoryStore::default()));
        let job = Job::queued(JobId::new(), JobKind::TerraformPlan, "default", json!({}));
        let id = job.id;
        store.insert(job).await.unwrap();
        let live = LiveLog::start(store.clone(), id);

        // Followers subscribe all along the output: from the start, after a
        // line number, and some slow enough to fall behind the broadcast.
        let mut followers = tokio::task::JoinSet::new();
        let producer = {
            let live = live.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while n < TOTAL {
                    let size = 1 + n % 97;
                    let batch: Vec<LogLine> = (n + 1..=(n + size).min(TOTAL)).map(line).collect();
                    n += batch.len() as u64;
                    live.publish(batch);
                    live.room().await;
                    if n % 5 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                live.all_stored().await;
                live.close();
                live.end();
            })
        };
        for i in 0..120u64 {
            let after = if i % 3 == 1 { i * 100 } else { 0 };
            let slow = i % 10 == 9;
            let follower = Follower::new(store.clone(), id, after, Some(&live));
            followers.spawn(async move {
                let mut follower = follower;
                let mut seen = Vec::new();
                while let Some(line) = follower.next().await {
                    if slow && line.n % 512 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    seen.push(line);
                }
                (after, seen)
            });
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        producer.await.unwrap();
        drop(live);
        let mut checked = 0;
        while let Some(joined) = followers.join_next().await {
            let (after, seen) = joined.unwrap();
            assert_complete(&seen, after, TOTAL);
            checked += 1;
        }
        assert_eq!(checked, 120);
        // After the end, from the store alone.
        let mut late = Follower::new(store.clone(), id, 0, None);
        let mut seen = Vec::new();
        while let Some(line) = late.next().await {
            seen.push(line);
        }
        assert_complete(&seen, 0, TOTAL);
    }

    #[tokio::test]
    async fn a_follower_of_a_job_whose_task_died_ends_with_the_stored_lines() {
        let store: Arc<dyn JobStore> = Arc::new(MemoryStore::default());
        let job = Job::queued(JobId::new(), JobKind::TerraformPlan, "default", json!({}));
        let id = job.id;
        store.insert(job).await.unwrap();
        let live = LiveLog::start(store.clone(), id);
        live.publish((1..=3).map(line).collect());
        let mut follower = Follower::new(store.clone(), id, 0, Some(&live));
        live.all_stored().await;
        // No `end`: the job's task is gone, the writer ends when closed.
        live.close();
        drop(live);
        let mut seen = Vec::new();
        while let Some(line) = follower.next().await {
            seen.push(line);
        }
        assert_complete(&seen, 0, 3);
    }
}
