//! Job records and their numbered log lines, behind the `JobStore` interface.
//!
//! `MemoryStore` keeps them in memory; a durable store implements the same trait.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

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
}

impl JobKind {
    /// Whether the job changes the workspace or the cluster, and so needs the
    /// workspace lock.
    pub fn is_mutating(self) -> bool {
        !matches!(self, JobKind::TerraformOutput)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::TerraformInit => "terraform.init",
            JobKind::TerraformPlan => "terraform.plan",
            JobKind::TerraformApply => "terraform.apply",
            JobKind::TerraformDestroy => "terraform.destroy",
            JobKind::TerraformOutput => "terraform.output",
            JobKind::AnsibleRun => "ansible.run",
        }
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

/// One numbered line of a job's log.
#[derive(Clone, Debug, Serialize)]
pub struct LogLine {
    /// 1-based, without gaps, per job.
    pub n: u64,
    pub stream: Stream,
    pub text: String,
}

/// How a finished job ended.
#[derive(Clone, Debug)]
pub struct Completion {
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub result: Option<Value>,
    pub error: Option<String>,
}

/// Persistence of jobs and their logs.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    async fn insert(&self, job: Job) -> Result<(), StoreError>;
    async fn mark_running(&self, id: JobId, at: OffsetDateTime) -> Result<(), StoreError>;
    async fn complete(
        &self,
        id: JobId,
        completion: Completion,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;
    /// Newest first.
    async fn list(&self, limit: usize) -> Result<Vec<Job>, StoreError>;
    /// Appends lines; they are numbered by the store, in order.
    async fn append_log(&self, id: JobId, lines: Vec<(Stream, String)>) -> Result<(), StoreError>;
    /// Lines numbered above `after`, at most `limit` of them.
    async fn read_log(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job {0} not found")]
    NotFound(JobId),
}

/// Jobs kept in memory for the life of the process.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    order: Vec<JobId>,
    jobs: HashMap<JobId, Job>,
    logs: HashMap<JobId, Vec<LogLine>>,
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn insert(&self, job: Job) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        inner.order.push(job.id);
        inner.logs.insert(job.id, Vec::new());
        inner.jobs.insert(job.id, job);
        Ok(())
    }

    async fn mark_running(&self, id: JobId, at: OffsetDateTime) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let job = inner.jobs.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        job.status = JobStatus::Running;
        job.started_at = Some(at);
        Ok(())
    }

    async fn complete(
        &self,
        id: JobId,
        completion: Completion,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let job = inner.jobs.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        job.status = completion.status;
        job.exit_code = completion.exit_code;
        job.result = completion.result;
        job.error = completion.error;
        job.finished_at = Some(at);
        let start = job.started_at.unwrap_or(job.created_at);
        job.duration_ms = Some((at - start).whole_milliseconds().max(0) as u64);
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self.inner.lock().unwrap().jobs.get(&id).cloned())
    }

    async fn list(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .order
            .iter()
            .rev()
            .take(limit)
            .filter_map(|id| inner.jobs.get(id).cloned())
            .collect())
    }

    async fn append_log(&self, id: JobId, lines: Vec<(Stream, String)>) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let log = inner.logs.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        for (stream, text) in lines {
            let n = log.len() as u64 + 1;
            log.push(LogLine { n, stream, text });
        }
        Ok(())
    }

    async fn read_log(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError> {
        let inner = self.inner.lock().unwrap();
        let log = inner.logs.get(&id).ok_or(StoreError::NotFound(id))?;
        Ok(log
            .iter()
            .skip(after.min(log.len() as u64) as usize)
            .take(limit)
            .cloned()
            .collect())
    }
}
