//! Pipelines: a job made of steps (a deploy). The pipeline holds the
//! workspace for its whole run; its tool steps are ordinary jobs, each with
//! its own log, started under that hold. Cancelling the pipeline cancels the
//! step that is running.

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::live::LiveLog;
use super::{
    JobEnded, JobHandle, JobSpec, RunOutput, Runner, RunningJob, Sink, SubmitError, ToolLog,
};
use crate::store::{Completion, Job, JobId, JobKind, JobStatus};
use crate::workspace::Holder;

/// What a pipeline job is, before it starts.
pub struct PipelineSpec {
    pub kind: JobKind,
    pub workspace: String,
    /// The request that started it, without secrets.
    pub request: Value,
    pub started_by: Option<String>,
    pub request_id: Option<String>,
}

/// How a pipeline ended.
pub struct PipelineEnd {
    pub status: JobStatus,
    pub result: Option<Value>,
    pub error: Option<String>,
    /// The failed step's output tails, for the caller's failure details.
    pub stdout_tail: Vec<String>,
    pub stderr_tail: Vec<String>,
}

/// What a pipeline's body works with: its log, its progress, its steps.
pub struct Pipeline {
    runner: Runner,
    id: JobId,
    sink: Sink,
    cancel: watch::Receiver<bool>,
}

impl Pipeline {
    pub fn id(&self) -> JobId {
        self.id
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// A line in the pipeline's own log.
    pub async fn log(&mut self, text: &str) {
        self.sink.system(text);
        self.sink.flush().await;
    }

    /// Records where the pipeline is (its steps) as the job's result.
    pub async fn progress(&self, result: Value) {
        if let Err(err) = self.runner.inner.store.set_result(self.id, result).await {
            tracing::error!(job_id = %self.id, error = %err, "could not record a pipeline's progress");
        }
    }

    /// Whether the pipeline was asked to stop.
    pub fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Starts a step's job under the pipeline's hold on the workspace.
    pub async fn start(&mut self, mut spec: JobSpec) -> Result<JobHandle, SubmitError> {
        spec.parent = Some(self.id);
        self.runner.submit(spec).await
    }

    /// Waits for a step's job to end; cancelling the pipeline meanwhile
    /// cancels the job.
    pub async fn wait(&mut self, handle: JobHandle) -> Arc<RunOutput> {
        let child = handle.id;
        let wait = handle.wait();
        tokio::pin!(wait);
        loop {
            tokio::select! {
                output = &mut wait => return output,
                changed = self.cancel.changed() => {
                    if changed.is_err() || *self.cancel.borrow() {
                        self.runner.cancel(child);
                        return wait.await;
                    }
                }
            }
        }
    }
}

impl Runner {
    /// Records a pipeline job, takes its workspace for the whole run, and
    /// runs `body` in its own task: like `submit`, the caller may wait on the
    /// handle or go away.
    pub async fn submit_pipeline<F, Fut>(
        &self,
        spec: PipelineSpec,
        body: F,
    ) -> Result<JobHandle, SubmitError>
    where
        F: FnOnce(Pipeline) -> Fut + Send + 'static,
        Fut: Future<Output = PipelineEnd> + Send + 'static,
    {
        let id = JobId::new();
        let guard = self
            .inner
            .locks
            .acquire(&spec.workspace, Holder::Job(id))
            .map_err(|holder| SubmitError::Busy {
                workspace: spec.workspace.clone(),
                holder,
            })?;
        let mut job = Job::queued(id, spec.kind, &spec.workspace, spec.request);
        job.started_by = spec.started_by.clone();
        let started_by = spec.started_by;
        job.request_id = spec.request_id.clone();
        self.inner.store.insert(job).await?;
        let started_at = OffsetDateTime::now_utc();
        self.inner
            .store
            .mark_running(id, started_at, None, None)
            .await?;
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
        let redactor = self.inner.redactor.read().unwrap().clone();
        let sink = Sink::new(
            id,
            ToolLog::Server,
            self.inner.config.max_log_bytes,
            redactor,
            live.clone(),
        );
        let runner = self.clone();
        let kind = spec.kind;
        tokio::spawn(async move {
            crate::metrics::job_started();
            let clock = std::time::Instant::now();
            tracing::info!(
                job_id = %id,
                kind = kind.as_str(),
                workspace = %spec.workspace,
                request_id = spec.request_id.as_deref().unwrap_or("-"),
                "job started"
            );
            let pipeline = Pipeline {
                runner: runner.clone(),
                id,
                sink,
                cancel: cancel_rx,
            };
            let end = body(pipeline).await;
            // Its sink is gone with it: the rest of its log is being stored.
            let completion = Completion {
                status: end.status,
                exit_code: None,
                result: end.result.clone(),
                error: end.error.clone(),
            };
            runner.record_end(id, completion, &live).await;
            runner.announce_end(JobEnded {
                id,
                kind,
                workspace: spec.workspace.clone(),
                started_by,
                parent: None,
                status: end.status,
                error: end.error.clone(),
            });
            crate::metrics::job_finished(kind, end.status, clock.elapsed().as_secs_f64());
            tracing::info!(job_id = %id, status = end.status.as_str(), "job finished");
            drop(guard);
            runner.inner.running.lock().unwrap().remove(&id);
            live.end();
            let _ = done_tx.send(Some(Arc::new(RunOutput {
                job_id: id,
                status: end.status,
                exit_code: None,
                stdout: String::new(),
                stdout_tail: end.stdout_tail,
                stderr_tail: end.stderr_tail,
                result: end.result,
                error: end.error,
            })));
        });
        Ok(JobHandle { id, done: done_rx })
    }
}
