//! Job records and their numbered log lines, behind the `JobStore` interface.
//!
//! `SqliteStore` (the default) keeps them in a file under `DATA_DIR`;
//! `MemoryStore` only for the life of the process. A PostgreSQL store would
//! implement the same trait. The cluster's events (leader changes) are kept
//! by the same store, next to the jobs that may have caused them, and so are
//! the backup schedules, next to the backup jobs they start, and small JSON
//! documents by kind and key (workspace policies, quotas, approvals, webhooks).

mod log_chunks;
mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// Identifier of one job (a UUID v4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub uuid::Uuid);

impl JobId {
    pub fn new() -> JobId {
        JobId(uuid::Uuid::new_v4())
    }

    pub fn parse(text: &str) -> Option<JobId> {
        uuid::Uuid::parse_str(text).ok().map(JobId)
    }
}

impl Default for JobId {
    fn default() -> Self {
        JobId::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    #[serde(rename = "terraform.init")]
    TerraformInit,
    #[serde(rename = "terraform.plan")]
    TerraformPlan,
    #[serde(rename = "terraform.apply")]
    TerraformApply,
    #[serde(rename = "terraform.destroy")]
    TerraformDestroy,
    #[serde(rename = "terraform.output")]
    TerraformOutput,
    #[serde(rename = "ansible.run")]
    AnsibleRun,
    #[serde(rename = "ansible.vault")]
    AnsibleVault,
    /// generate → init → plan → apply → output → configure → run, as steps.
    #[serde(rename = "deploy")]
    Deploy,
    /// A read-only look at the cluster's replication (`/cluster`).
    #[serde(rename = "ansible.status")]
    AnsibleStatus,
    /// Patroni operations (`operate.yml`): a switchover, a failover, a
    /// rolling restart, a member rebuilt from the leader.
    #[serde(rename = "cluster.switchover")]
    ClusterSwitchover,
    #[serde(rename = "cluster.failover")]
    ClusterFailover,
    #[serde(rename = "cluster.restart")]
    ClusterRestart,
    #[serde(rename = "cluster.reinit")]
    ClusterReinit,
    /// pgBackRest (`backup.yml`, `restore.yml`): a backup taken on the
    /// leader, the whole cluster restored to a point of its history.
    #[serde(rename = "cluster.backup")]
    ClusterBackup,
    #[serde(rename = "cluster.restore")]
    ClusterRestore,
}

impl JobKind {
    pub const ALL: [JobKind; 15] = [
        JobKind::TerraformInit,
        JobKind::TerraformPlan,
        JobKind::TerraformApply,
        JobKind::TerraformDestroy,
        JobKind::TerraformOutput,
        JobKind::AnsibleRun,
        JobKind::AnsibleVault,
        JobKind::Deploy,
        JobKind::AnsibleStatus,
        JobKind::ClusterSwitchover,
        JobKind::ClusterFailover,
        JobKind::ClusterRestart,
        JobKind::ClusterReinit,
        JobKind::ClusterBackup,
        JobKind::ClusterRestore,
    ];

    pub fn parse(text: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether the job changes the workspace or the cluster, and so needs the
    /// workspace lock.
    pub fn is_mutating(self) -> bool {
        !matches!(self, JobKind::TerraformOutput | JobKind::AnsibleStatus)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::TerraformInit => "terraform.init",
            JobKind::TerraformPlan => "terraform.plan",
            JobKind::TerraformApply => "terraform.apply",
            JobKind::TerraformDestroy => "terraform.destroy",
            JobKind::TerraformOutput => "terraform.output",
            JobKind::AnsibleRun => "ansible.run",
            JobKind::AnsibleVault => "ansible.vault",
            JobKind::Deploy => "deploy",
            JobKind::AnsibleStatus => "ansible.status",
            JobKind::ClusterSwitchover => "cluster.switchover",
            JobKind::ClusterFailover => "cluster.failover",
            JobKind::ClusterRestart => "cluster.restart",
            JobKind::ClusterReinit => "cluster.reinit",
            JobKind::ClusterBackup => "cluster.backup",
            JobKind::ClusterRestore => "cluster.restore",
        }
    }

    /// An operation of ours that may move the leader (`operate.yml`, or a
    /// restore re-bootstrapping the cluster).
    pub fn is_cluster_operation(self) -> bool {
        matches!(
            self,
            JobKind::ClusterSwitchover
                | JobKind::ClusterFailover
                | JobKind::ClusterRestart
                | JobKind::ClusterReinit
                | JobKind::ClusterRestore
        )
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    Interrupted,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::TimedOut,
        JobStatus::Interrupted,
    ];

    pub fn parse(text: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Interrupted => "interrupted",
        }
    }
}

/// The record of one run of a tool.
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: JobId,
    pub kind: JobKind,
    pub workspace: String,
    /// The request that started it, without secrets.
    pub request: Value,
    /// Who started it (the token's name; "anonymous" without authentication).
    pub started_by: Option<String>,
    /// The `x-request-id` of the request that started it.
    pub request_id: Option<String>,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub duration_ms: Option<u64>,
    /// Kind-specific result (e.g. the parsed outputs of `terraform output`).
    pub result: Option<Value>,
    /// Why the job did not succeed, in one line.
    pub error: Option<String>,
    /// Process (and process group) id of the tool while it runs.
    pub pid: Option<u32>,
    /// Start time of that process (clock ticks since boot), to recognise it
    /// after a restart without being fooled by a reused pid.
    #[serde(skip)]
    pub pid_start: Option<u64>,
    /// A plan's approval when its workspace required one: not kept with the
    /// job, the application layer attaches it when the job is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Value>,
}

impl Job {
    /// A new job, queued now.
    pub fn queued(id: JobId, kind: JobKind, workspace: &str, request: Value) -> Job {
        Job {
            id,
            kind,
            workspace: workspace.to_string(),
            request,
            started_by: None,
            request_id: None,
            status: JobStatus::Queued,
            exit_code: None,
            created_at: OffsetDateTime::now_utc(),
            started_at: None,
            finished_at: None,
            duration_ms: None,
            result: None,
            error: None,
            pid: None,
            pid_start: None,
            approval: None,
        }
    }
}

/// Which stream of the child a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines the runner itself adds (truncation markers, timeouts).
    System,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
        }
    }

    pub fn parse(text: &str) -> Stream {
        match text {
            "stdout" => Stream::Stdout,
            "stderr" => Stream::Stderr,
            _ => Stream::System,
        }
    }
}

/// One numbered line of a job's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// 1-based and in order, per job; a gap only where lines could not be
    /// stored, after a system line that says so.
    pub n: u64,
    pub stream: Stream,
    pub text: String,
}

impl Job {
    /// The job as it ended.
    pub fn finish(&mut self, completion: &Completion, at: OffsetDateTime) {
        self.status = completion.status;
        self.exit_code = completion.exit_code;
        self.result = completion.result.clone();
        self.error = completion.error.clone();
        self.finished_at = Some(at);
        self.duration_ms = Some(duration_ms(self.started_at.unwrap_or(self.created_at), at));
    }
}

/// How a finished job ended.
#[derive(Clone, Debug)]
pub struct Completion {
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub result: Option<Value>,
    pub error: Option<String>,
}

/// Which jobs to list: newest first, optionally filtered, one page at a time.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub workspace: Option<String>,
    pub kind: Option<JobKind>,
    pub status: Option<JobStatus>,
    /// Only jobs older than this cursor (from a previous page).
    pub before: Option<u64>,
    pub limit: usize,
}

/// One page of jobs and the cursor of the next, if there is one.
#[derive(Clone, Debug)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<u64>,
}

/// Something the server saw happen to a workspace's cluster.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ClusterEvent {
    /// Increasing with every event recorded.
    pub id: u64,
    pub workspace: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// `leader_changed`.
    pub kind: String,
    /// The member that led before.
    pub from: Option<String>,
    /// The member that leads now.
    pub to: Option<String>,
    /// The new leader's timeline.
    pub timeline: Option<u64>,
    /// `switchover`, `failover` or `restore` when an operation of this
    /// server caused it, `automatic` when Patroni did it by itself.
    pub cause: String,
}

/// A workspace's backup schedule as stored: the expressions as given, and
/// how far the scheduler got with them.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleRecord {
    pub workspace: String,
    /// A cron expression per backup type; `full` is always there.
    pub full: String,
    pub diff: Option<String>,
    pub incr: Option<String>,
    /// The IANA time zone the expressions are read in.
    pub timezone: String,
    pub saved_at: OffsetDateTime,
    /// The fire times up to this instant have been acted on.
    pub considered_at: OffsetDateTime,
    /// A backup type that came due while the workspace was busy, waiting to
    /// start.
    pub pending: Option<String>,
    /// The last backup the schedule started, per type.
    pub last_runs: Vec<ScheduledRun>,
    /// The last backup the schedule could not start, and why.
    pub last_error: Option<ScheduleFailure>,
}

/// A backup a schedule started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduledRun {
    /// `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub kind: String,
    pub job_id: JobId,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
}

/// A backup a schedule could not start (busy workspaces wait instead).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleFailure {
    /// `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
}

/// Persistence of jobs and their logs, of the cluster's events and of the
/// backup schedules.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    async fn insert(&self, job: Job) -> Result<(), StoreError>;
    /// The job's process started.
    async fn mark_running(
        &self,
        id: JobId,
        at: OffsetDateTime,
        pid: Option<u32>,
        pid_start: Option<u64>,
    ) -> Result<(), StoreError>;
    async fn complete(
        &self,
        id: JobId,
        completion: Completion,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Records a running job's progress (a deploy's steps) as its result.
    async fn set_result(&self, id: JobId, result: Value) -> Result<(), StoreError>;
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;
    async fn list(&self, filter: &JobFilter) -> Result<JobPage, StoreError>;
    /// Appends lines, already numbered by the runner, in order.
    async fn append_log(&self, id: JobId, lines: Vec<LogLine>) -> Result<(), StoreError>;
    /// Lines numbered above `after`, at most `limit` of them.
    async fn read_log(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError>;
    /// At start-up: every job still queued or running belonged to a server
    /// that died. Marks them `interrupted` and returns them.
    async fn interrupt_unfinished(&self, at: OffsetDateTime) -> Result<Vec<Job>, StoreError>;
    /// Records an event; its `id` is ignored and the recorded one returned.
    async fn add_event(&self, event: ClusterEvent) -> Result<u64, StoreError>;
    /// A workspace's events, newest first, at most `limit`.
    async fn events(&self, workspace: &str, limit: usize) -> Result<Vec<ClusterEvent>, StoreError>;
    /// Records a workspace's schedule, replacing the one it had.
    async fn put_schedule(&self, schedule: ScheduleRecord) -> Result<(), StoreError>;
    async fn schedule(&self, workspace: &str) -> Result<Option<ScheduleRecord>, StoreError>;
    /// Every workspace's schedule, by workspace name.
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError>;
    /// Removes a workspace's schedule; whether it had one.
    async fn delete_schedule(&self, workspace: &str) -> Result<bool, StoreError>;
    /// Records a small JSON document (a workspace's policy, a quota, an
    /// approval, a webhook), replacing the one under the same kind and key.
    async fn put_record(&self, kind: &str, key: &str, value: Value) -> Result<(), StoreError>;
    async fn record(&self, kind: &str, key: &str) -> Result<Option<Value>, StoreError>;
    /// Every document of a kind, by key.
    async fn records(&self, kind: &str) -> Result<Vec<(String, Value)>, StoreError>;
    /// Removes a document; whether there was one.
    async fn delete_record(&self, kind: &str, key: &str) -> Result<bool, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("job store: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("job store: {0}")]
    Other(String),
}

impl StoreError {
    /// The fault of the disk under the store (full, read-only, failing), if
    /// this is one: the store works again once the disk does.
    pub fn storage_fault(&self) -> Option<crate::disk::StorageFault> {
        use crate::disk::StorageFault;
        use rusqlite::ErrorCode;
        let StoreError::Database(rusqlite::Error::SqliteFailure(failure, _)) = self else {
            return None;
        };
        match failure.code {
            ErrorCode::DiskFull => Some(StorageFault::NoSpace),
            ErrorCode::ReadOnly => Some(StorageFault::ReadOnly),
            ErrorCode::SystemIoFailure | ErrorCode::CannotOpen => Some(StorageFault::Io),
            _ => None,
        }
    }
}

/// Milliseconds between two instants, for `duration_ms`.
pub(crate) fn duration_ms(from: OffsetDateTime, to: OffsetDateTime) -> u64 {
    (to - from).whole_milliseconds().max(0) as u64
}

/// The message recorded on jobs a dead server left behind.
pub const INTERRUPTED: &str = "the server stopped while the job was running";
