//! The job runner: owns every child process the server starts.
//!
//! A job is submitted as a `JobSpec`; the runner records it, takes the
//! workspace lock when the job mutates, spawns the tool in its own process
//! group, streams its output line by line into the store and the tool log,
//! enforces the timeouts, and records the outcome. The job lives in its own
//! task: an HTTP client that goes away does not stop it.

mod lines;
mod live;
mod pipeline;
mod process;
mod pump;

pub use live::Follower;
pub use pipeline::{Pipeline, PipelineEnd, PipelineSpec};
pub use process::capture_secret_output;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::secret::{Redactor, Secret};
use crate::store::{
    Completion, Job, JobFilter, JobId, JobKind, JobPage, JobStatus, JobStore, LogLine, StoreError,
    Stream,
};
use crate::telemetry::{ToolFile, ToolLogBatch};
use crate::workspace::{Holder, LockGuard, WorkspaceLocks};
use live::LiveLog;

/// Limits applied to every job.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub cancel_grace: Duration,
    pub max_line_bytes: usize,
    pub max_log_bytes: usize,
    /// Environment variables removed from every child (they hold secrets).
    pub secret_env: Vec<String>,
}

/// Which log file a job's lines also go to.
#[derive(Clone, Copy, Debug)]
pub enum ToolLog {
    Terraform,
    Ansible,
    /// The server's own log: a pipeline's lines about its steps.
    Server,
}

/// Turns the raw end of a run into the job's result, or a reason it failed.
/// Runs on the blocking pool: it may write files or run a short command.
pub type FinishHook = Box<dyn FnOnce(&RunOutput) -> Result<Option<Value>, String> + Send + Sync>;

/// Everything needed to run one tool invocation.
pub struct JobSpec {
    pub kind: JobKind,
    pub workspace: String,
    /// The request that started the job, without secrets.
    pub request: Value,
    /// Who asked for it.
    pub started_by: Option<String>,
    /// The request that started it (`x-request-id`).
    pub request_id: Option<String>,
    /// The pipeline (a deploy) this job is a step of: it runs under the
    /// pipeline's hold on the workspace.
    pub parent: Option<JobId>,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    /// A secret handed to the child through a pipe readable as this fd.
    pub secret_input: Option<(i32, Secret)>,
    /// Written to the child's standard input, which is then closed.
    pub stdin_input: Option<Secret>,
    /// Secrets of this job only, masked in its output like the server's.
    pub extra_secrets: Vec<Secret>,
    pub log: ToolLog,
    /// Keep standard output (up to a cap) for the caller: for `"output": true`
    /// or for parsing it. Otherwise only the log store has it.
    pub capture_stdout: bool,
    /// Whether standard output goes to the log, the tool log and the failure
    /// details. `terraform output -json` prints sensitive values in clear: its
    /// stdout is only parsed.
    pub log_stdout: bool,
    /// Exit codes that mean success (terraform plan's `-detailed-exitcode` uses 2).
    pub success_codes: Vec<i32>,
    /// Runs when the child exited with a success code.
    pub on_success: Option<FinishHook>,
    /// Runs whatever the end (e.g. to forget a consumed plan file).
    pub on_finish: Option<Box<dyn FnOnce(JobStatus) + Send + Sync>>,
}

/// How a job ended, for whoever watches every job's end (the webhooks).
#[derive(Clone, Debug)]
pub struct JobEnded {
    pub id: JobId,
    pub kind: JobKind,
    pub workspace: String,
    pub started_by: Option<String>,
    /// The pipeline (a deploy) it was a step of.
    pub parent: Option<JobId>,
    pub status: JobStatus,
    /// Why it did not succeed, secrets masked.
    pub error: Option<String>,
}

/// Told of every job's end, once, after its end is recorded.
pub type EndWatcher = Box<dyn Fn(&JobEnded) + Send + Sync>;

/// What a finished run produced, for the caller that waited on it.
#[derive(Clone, Debug)]
pub struct RunOutput {
    pub job_id: JobId,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    /// Standard output, up to a cap (for `"output": true`).
    pub stdout: String,
    /// The last lines of each stream (for failure details).
    pub stdout_tail: Vec<String>,
    pub stderr_tail: Vec<String>,
    pub result: Option<Value>,
    /// Why the run did not succeed, in one line.
    pub error: Option<String>,
}

/// A started job; each clone waits for the same end.
#[derive(Clone)]
pub struct JobHandle {
    pub id: JobId,
    done: watch::Receiver<Option<Arc<RunOutput>>>,
}

impl JobHandle {
    /// Waits for the job to end. Dropping this future does not stop the job.
    pub async fn wait(mut self) -> Arc<RunOutput> {
        loop {
            if let Some(output) = self.done.borrow_and_update().clone() {
                return output;
            }
            if self.done.changed().await.is_err() {
                // The job task ended without a result: only on a panic.
                return Arc::new(RunOutput {
                    job_id: self.id,
                    status: JobStatus::Failed,
                    exit_code: None,
                    stdout: String::new(),
                    stdout_tail: Vec::new(),
                    stderr_tail: vec!["the job ended unexpectedly".into()],
                    result: None,
                    error: Some("the job ended unexpectedly".into()),
                });
            }
        }
    }
}

/// Why a job could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("workspace {workspace} is busy")]
    Busy { workspace: String, holder: Holder },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Starts and supervises jobs. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<RunnerInner>,
}

struct RunnerInner {
    store: Arc<dyn JobStore>,
    locks: WorkspaceLocks,
    config: RunnerConfig,
    /// Every secret the server knows; grows when it learns the vault's.
    redactor: std::sync::RwLock<Redactor>,
    /// The jobs running in this process.
    running: Mutex<HashMap<JobId, RunningJob>>,
    /// Jobs that ended while the store could not record it: their final
    /// record, served from here until the store takes it.
    unrecorded: Mutex<HashMap<JobId, Job>>,
    /// Told of each job's end.
    on_end: std::sync::OnceLock<EndWatcher>,
}

struct RunningJob {
    cancel: watch::Sender<bool>,
    live: Arc<LiveLog>,
}

/// Lines of stdout kept for `"output": true`, and tail lengths for details.
const STDOUT_CAP_BYTES: usize = 8 * 1024 * 1024;
const TAIL_LINES: usize = 60;
/// How long to wait for output after the child exited before killing its group.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long, at most, output the child wrote before it exited is still read
/// while it keeps coming (the store was behind).
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

impl Runner {
    pub fn new(
        store: Arc<dyn JobStore>,
        locks: WorkspaceLocks,
        config: RunnerConfig,
        redactor: Redactor,
    ) -> Runner {
        Runner {
            inner: Arc::new(RunnerInner {
                store,
                locks,
                config,
                redactor: std::sync::RwLock::new(redactor),
                running: Mutex::new(HashMap::new()),
                unrecorded: Mutex::new(HashMap::new()),
                on_end: std::sync::OnceLock::new(),
            }),
        }
    }

    /// A job as recorded, or as it ended when the store could not record
    /// its end yet.
    pub async fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        if let Some(job) = self.inner.unrecorded.lock().unwrap().get(&id) {
            return Ok(Some(job.clone()));
        }
        self.inner.store.get(id).await
    }

    /// A page of jobs, each as [`Runner::job`] shows it.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
        let mut page = self.inner.store.list(filter).await?;
        let unrecorded = self.inner.unrecorded.lock().unwrap();
        for job in &mut page.jobs {
            if let Some(ended) = unrecorded.get(&job.id) {
                *job = ended.clone();
            }
        }
        Ok(page)
    }

    /// Records how a job ended, once its log is stored. When the store cannot
    /// write, the job does not wait for the disk: its end is kept in memory
    /// (see [`Runner::job`]) and recorded as soon as the store writes again,
    /// after the lines still held.
    async fn record_end(&self, id: JobId, completion: Completion, live: &Arc<LiveLog>) {
        let at = OffsetDateTime::now_utc();
        let fault = match live.settled().await {
            Ok(()) => match self.inner.store.complete(id, completion.clone(), at).await {
                Ok(()) => return,
                Err(err) => err.to_string(),
            },
            Err(fault) => fault,
        };
        tracing::error!(job_id = %id, error = %fault, "could not record the end of a job: kept in memory until the store writes again");
        if let Ok(Some(mut job)) = self.inner.store.get(id).await {
            job.finish(&completion, at);
            self.inner.unrecorded.lock().unwrap().insert(id, job);
        }
        let runner = self.clone();
        let live = live.clone();
        tokio::spawn(async move {
            live.all_stored().await;
            while let Err(err) = runner
                .inner
                .store
                .complete(id, completion.clone(), at)
                .await
            {
                tracing::debug!(job_id = %id, error = %err, "the end of the job is still not recorded");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            runner.inner.unrecorded.lock().unwrap().remove(&id);
            tracing::info!(job_id = %id, "recorded the end of the job");
        });
    }

    /// Has `watcher` told of every job's end from now on (one watcher).
    pub fn on_job_end(&self, watcher: EndWatcher) {
        if self.inner.on_end.set(watcher).is_err() {
            tracing::error!("a second watcher of job ends was refused");
        }
    }

    /// Tells the watcher, if any, that a job ended.
    fn announce_end(&self, mut ended: JobEnded) {
        if let Some(watcher) = self.inner.on_end.get() {
            ended.error = ended.error.map(|e| self.redact(&e));
            watcher(&ended);
        }
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.inner.store
    }

    pub fn locks(&self) -> &WorkspaceLocks {
        &self.inner.locks
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.inner.config
    }

    /// Masks these values in the output of every job started from now on.
    pub fn add_secrets(&self, secrets: impl IntoIterator<Item = Secret>) {
        let mut redactor = self.inner.redactor.write().unwrap();
        *redactor = redactor.with(secrets);
    }

    /// Masks every known secret in a text.
    pub fn redact(&self, text: &str) -> String {
        self.inner
            .redactor
            .read()
            .unwrap()
            .redact(text)
            .into_owned()
    }

    /// Records the job, takes the workspace lock if it mutates, and starts it.
    pub async fn submit(&self, spec: JobSpec) -> Result<JobHandle, SubmitError> {
        let id = JobId::new();
        let held_by_parent = spec.parent.is_some_and(|parent| {
            self.inner.locks.holder(&spec.workspace) == Some(Holder::Job(parent))
        });
        let guard = if spec.kind.is_mutating() && !held_by_parent {
            Some(
                self.inner
                    .locks
                    .acquire(&spec.workspace, Holder::Job(id))
                    .map_err(|holder| SubmitError::Busy {
                        workspace: spec.workspace.clone(),
                        holder,
                    })?,
            )
        } else {
            None
        };
        let mut job = Job::queued(id, spec.kind, &spec.workspace, spec.request.clone());
        job.started_by = spec.started_by.clone();
        job.request_id = spec.request_id.clone();
        self.inner.store.insert(job).await?;
        let (done_tx, done_rx) = watch::channel(None);
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let live = LiveLog::start(self.inner.store.clone(), id);
        self.inner.running.lock().unwrap().insert(
            id,
            RunningJob {
                cancel: cancel_tx,
                live: live.clone(),
            },
        );
        let runner = self.clone();
        tokio::spawn(async move {
            let output = runner.run(id, spec, guard, cancel_rx, live.clone()).await;
            runner.inner.running.lock().unwrap().remove(&id);
            live.end();
            let _ = done_tx.send(Some(Arc::new(output)));
        });
        Ok(JobHandle { id, done: done_rx })
    }

    /// Asks a running job to stop (SIGINT, grace period, SIGKILL).
    /// Returns false when the job is not running in this process.
    pub fn cancel(&self, id: JobId) -> bool {
        match self.inner.running.lock().unwrap().get(&id) {
            Some(job) => {
                let _ = job.cancel.send(true);
                true
            }
            None => false,
        }
    }

    /// Follows a job's log from line `after` on: its stored lines, then, while
    /// it runs in this process, its live ones until it ends.
    pub fn follow(&self, id: JobId, after: u64) -> Follower {
        let live = self
            .inner
            .running
            .lock()
            .unwrap()
            .get(&id)
            .map(|job| job.live.clone());
        Follower::new(self.inner.store.clone(), id, after, live.as_ref())
    }

    /// How many jobs are running in this process.
    pub fn running_count(&self) -> usize {
        self.inner.running.lock().unwrap().len()
    }

    /// At start-up: jobs a dead server left `queued` or `running` become
    /// `interrupted`; a tool process of theirs still alive is stopped.
    pub async fn recover(&self) -> Result<usize, crate::store::StoreError> {
        let jobs = self
            .inner
            .store
            .interrupt_unfinished(OffsetDateTime::now_utc())
            .await?;
        for job in &jobs {
            tracing::warn!(job_id = %job.id, kind = job.kind.as_str(), "job interrupted by a server restart");
            if let (Some(pid), Some(start)) = (job.pid, job.pid_start)
                && process::start_time(pid) == Some(start)
            {
                tracing::warn!(job_id = %job.id, pid, "stopping the interrupted job's processes");
                process::stop_group(pid, self.inner.config.cancel_grace);
            }
        }
        Ok(jobs.len())
    }

    /// Graceful shutdown: running jobs get `grace` to finish, then are
    /// cancelled (and recorded so); returns when all have ended.
    pub async fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while self.running_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ids: Vec<JobId> = self.inner.running.lock().unwrap().keys().copied().collect();
        for id in &ids {
            tracing::warn!(job_id = %id, "server shutting down: cancelling the job");
            self.cancel(*id);
        }
        let deadline = Instant::now() + self.inner.config.cancel_grace + Duration::from_secs(5);
        while self.running_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn run(
        &self,
        id: JobId,
        mut spec: JobSpec,
        guard: Option<LockGuard>,
        cancel: watch::Receiver<bool>,
        live: Arc<LiveLog>,
    ) -> RunOutput {
        let store = &self.inner.store;
        let redactor = self
            .inner
            .redactor
            .read()
            .unwrap()
            .with(spec.extra_secrets.clone());
        let mut sink = Sink::new(
            id,
            spec.log,
            self.inner.config.max_log_bytes,
            redactor,
            live,
        );
        crate::metrics::job_started();
        let started = std::time::Instant::now();
        sink.capture_stdout = spec.capture_stdout;
        sink.log_stdout = spec.log_stdout;
        if !spec.log_stdout {
            sink.system("standard output is not logged: it may hold sensitive values");
        }
        tracing::info!(
            job_id = %id,
            kind = spec.kind.as_str(),
            workspace = %spec.workspace,
            request_id = spec.request_id.as_deref().unwrap_or("-"),
            "job started"
        );

        let (returned, ended) =
            process::supervise(&spec, &self.inner.config, sink, store, cancel).await;
        sink = returned;
        let (mut status, exit_code, mut error) = match ended {
            Ok(process::Ended {
                exit_code,
                signal,
                stopped,
            }) => match (stopped, exit_code) {
                (Some(process::StopReason::Cancelled), _) => (
                    JobStatus::Cancelled,
                    exit_code,
                    Some("cancelled".to_string()),
                ),
                (Some(process::StopReason::Timeout(why)), _) => {
                    (JobStatus::TimedOut, exit_code, Some(why))
                }
                (None, Some(code)) if spec.success_codes.contains(&code) => {
                    (JobStatus::Succeeded, Some(code), None)
                }
                (None, Some(code)) => (
                    JobStatus::Failed,
                    Some(code),
                    Some(format!("exited with code {code}")),
                ),
                (None, None) => (JobStatus::Failed, None, Some(killed_by(signal))),
            },
            Err(why) => {
                sink.system(&why);
                (JobStatus::Failed, None, Some(why))
            }
        };
        sink.flush().await;

        let mut output = RunOutput {
            job_id: id,
            status,
            exit_code,
            stdout: std::mem::take(&mut sink.stdout),
            stdout_tail: sink.stdout_tail.drain(..).collect(),
            stderr_tail: sink.stderr_tail.drain(..).collect(),
            result: None,
            error: None,
        };
        if status == JobStatus::Succeeded
            && let Some(hook) = spec.on_success.take()
        {
            // Off the runtime: a hook writes files or runs a short command.
            let outcome = tokio::task::spawn_blocking(move || {
                let outcome = hook(&output);
                (output, outcome)
            })
            .await;
            let (ran, outcome) = match outcome {
                Ok(ran) => ran,
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(err) => panic!("the job's success hook was cancelled: {err}"),
            };
            output = ran;
            match outcome {
                Ok(result) => output.result = result,
                Err(why) => {
                    status = JobStatus::Failed;
                    error = Some(why);
                }
            }
        }
        if let Some(hook) = spec.on_finish.take() {
            hook(status);
        }
        output.status = status;
        output.error = error.clone();
        let completion = Completion {
            status,
            exit_code,
            result: output.result.clone(),
            error,
        };
        self.record_end(id, completion, &sink.live).await;
        self.announce_end(JobEnded {
            id,
            kind: spec.kind,
            workspace: spec.workspace.clone(),
            started_by: spec.started_by.clone(),
            parent: spec.parent,
            status,
            error: output.error.clone(),
        });
        crate::metrics::job_finished(spec.kind, status, started.elapsed().as_secs_f64());
        tracing::info!(job_id = %id, status = status.as_str(), exit_code = ?exit_code, "job finished");
        drop(guard);
        output
    }
}

/// How a child killed by a signal (from outside: the runner's own stops are
/// cancellations and timeouts) is reported.
fn killed_by(signal: Option<i32>) -> String {
    match signal.and_then(|n| nix::sys::signal::Signal::try_from(n).ok()) {
        Some(signal) => format!("killed by signal {} ({signal})", signal as i32),
        None => "killed by a signal".to_string(),
    }
}

/// Where a job's lines go: live followers and the store (in batches), the tool
/// log, and the tails kept for the caller.
pub(crate) struct Sink {
    job_id: JobId,
    log: ToolLog,
    redactor: Redactor,
    live: Arc<LiveLog>,
    /// Lines for terraform.log or ansible.log, sent with each flush.
    tool_log: Option<ToolLogBatch>,
    next_n: u64,
    pending: Vec<LogLine>,
    stored_bytes: usize,
    max_log_bytes: usize,
    truncated: bool,
    stdout: String,
    capture_stdout: bool,
    log_stdout: bool,
    stdout_tail: VecDeque<String>,
    stderr_tail: VecDeque<String>,
}

/// Lines are handed on (to followers, the store) in batches of about this many.
const BATCH: usize = 256;
/// The same for the tool log, in bytes.
const TOOL_LOG_BATCH_BYTES: usize = 64 * 1024;

impl Sink {
    fn new(
        job_id: JobId,
        log: ToolLog,
        max_log_bytes: usize,
        redactor: Redactor,
        live: Arc<LiveLog>,
    ) -> Sink {
        let tool_log = match log {
            ToolLog::Terraform => Some(ToolLogBatch::new(ToolFile::Terraform, job_id)),
            ToolLog::Ansible => Some(ToolLogBatch::new(ToolFile::Ansible, job_id)),
            ToolLog::Server => None,
        };
        Sink {
            job_id,
            log,
            redactor,
            live,
            tool_log,
            next_n: 1,
            pending: Vec::new(),
            stored_bytes: 0,
            max_log_bytes,
            truncated: false,
            stdout: String::new(),
            capture_stdout: false,
            log_stdout: true,
            stdout_tail: VecDeque::new(),
            stderr_tail: VecDeque::new(),
        }
    }

    fn push(&mut self, stream: Stream, raw: String) {
        let redacted = match self.redactor.redact(&raw) {
            Cow::Owned(text) => Some(text),
            Cow::Borrowed(_) => None,
        };
        let text = redacted.unwrap_or(raw);
        if stream == Stream::Stdout && !self.log_stdout {
            if self.capture_stdout && self.stdout.len() < STDOUT_CAP_BYTES {
                self.stdout.push_str(&text);
                self.stdout.push('\n');
            }
            return;
        }
        let id = self.job_id;
        if let Some(tool_log) = &mut self.tool_log {
            let name = match stream {
                Stream::Stdout => "Stdout",
                Stream::Stderr => "Stderr",
                Stream::System => "System",
            };
            tool_log.push(name, &text);
        }
        // The console and app.log have tool output only with DEBUG: without
        // it, no subscriber wants these events and they cost nothing.
        match self.log {
            ToolLog::Terraform => {
                tracing::info!(target: "terraform_output", job_id = %id, stream = ?stream, "{text}")
            }
            ToolLog::Ansible => {
                tracing::info!(target: "ansible_output", job_id = %id, stream = ?stream, "{text}")
            }
            ToolLog::Server => tracing::info!(job_id = %id, "{text}"),
        }
        // The runner's own lines reach the caller as the job's error instead.
        let tail = match stream {
            Stream::Stderr => Some(&mut self.stderr_tail),
            Stream::Stdout => Some(&mut self.stdout_tail),
            Stream::System => None,
        };
        if let Some(tail) = tail {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text.clone());
        }
        if self.capture_stdout && stream == Stream::Stdout && self.stdout.len() < STDOUT_CAP_BYTES {
            self.stdout.push_str(&text);
            self.stdout.push('\n');
            if self.stdout.len() >= STDOUT_CAP_BYTES {
                self.stdout.push_str("[output truncated]\n");
            }
        }
        if self.truncated {
            return;
        }
        self.stored_bytes += text.len() + 1;
        let (stream, text) = if self.stored_bytes > self.max_log_bytes {
            self.truncated = true;
            (
                Stream::System,
                format!("[log truncated: more than {} bytes]", self.max_log_bytes),
            )
        } else {
            (stream, text)
        };
        self.pending.push(LogLine {
            n: self.next_n,
            stream,
            text,
        });
        self.next_n += 1;
    }

    /// Whether enough is pending to hand on now.
    fn wants_flush(&self) -> bool {
        self.pending.len() >= BATCH
            || self.tool_log.as_ref().map_or(0, ToolLogBatch::len) >= TOOL_LOG_BATCH_BYTES
    }

    fn system(&mut self, text: &str) {
        self.push(Stream::System, text.to_string());
    }

    /// Hands the pending lines to live followers and to the store's writer;
    /// waits only when the writer is far behind (see `live`).
    async fn flush(&mut self) {
        if let Some(tool_log) = &mut self.tool_log {
            tool_log.send();
        }
        if self.pending.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.pending);
        crate::metrics::log_bytes(lines.iter().map(|l| l.text.len() as u64 + 1).sum());
        self.live.publish(lines);
        self.live.room().await;
    }
}

impl Drop for Sink {
    /// No more lines: the writer stores what is left and ends (a panicking
    /// job included, so its followers are not left waiting).
    fn drop(&mut self) {
        self.live.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_killed_from_outside_is_reported_with_its_signal() {
        assert_eq!(killed_by(Some(9)), "killed by signal 9 (SIGKILL)");
        assert_eq!(killed_by(Some(15)), "killed by signal 15 (SIGTERM)");
        assert_eq!(killed_by(None), "killed by a signal");
    }
}
