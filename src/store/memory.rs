//! Jobs kept in memory for the life of the process (tests, `DATABASE_URL=memory:`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;

use super::{
    ClusterEvent, Completion, INTERRUPTED, Job, JobFilter, JobId, JobPage, JobStatus, JobStore,
    LogLine, ScheduleRecord, StoreError,
};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Insertion order; a job's cursor is its index + 1.
    order: Vec<JobId>,
    jobs: HashMap<JobId, Job>,
    logs: HashMap<JobId, Vec<LogLine>>,
    /// Oldest first; an event's id is its index + 1.
    events: Vec<ClusterEvent>,
    /// By kind, then key.
    records: BTreeMap<(String, String), Value>,
    /// By workspace name.
    schedules: BTreeMap<String, ScheduleRecord>,
}

impl Inner {
    fn job(&mut self, id: JobId) -> Result<&mut Job, StoreError> {
        self.jobs.get_mut(&id).ok_or(StoreError::NotFound(id))
    }
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

    async fn mark_running(
        &self,
        id: JobId,
        at: OffsetDateTime,
        pid: Option<u32>,
        pid_start: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let job = inner.job(id)?;
        job.status = JobStatus::Running;
        job.started_at = Some(at);
        job.pid = pid;
        job.pid_start = pid_start;
        Ok(())
    }

    async fn complete(
        &self,
        id: JobId,
        completion: Completion,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        inner.job(id)?.finish(&completion, at);
        Ok(())
    }

    async fn set_result(&self, id: JobId, result: Value) -> Result<(), StoreError> {
        self.inner.lock().unwrap().job(id)?.result = Some(result);
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self.inner.lock().unwrap().jobs.get(&id).cloned())
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
        let inner = self.inner.lock().unwrap();
        let len = inner.order.len();
        // Only jobs whose cursor (index + 1) is below `before`.
        let end = filter
            .before
            .map(|c| (c as usize).saturating_sub(1).min(len))
            .unwrap_or(len);
        let mut picked = Vec::new();
        for index in (0..end).rev() {
            let job = &inner.jobs[&inner.order[index]];
            let matches = filter
                .workspace
                .as_ref()
                .is_none_or(|w| *w == job.workspace)
                && filter.kind.is_none_or(|k| k == job.kind)
                && filter.status.is_none_or(|s| s == job.status);
            if matches {
                picked.push(index);
                if picked.len() > filter.limit {
                    break;
                }
            }
        }
        let next_cursor = if picked.len() > filter.limit {
            picked.pop();
            picked.last().map(|i| *i as u64 + 1)
        } else {
            None
        };
        let jobs = picked
            .into_iter()
            .map(|i| inner.jobs[&inner.order[i]].clone())
            .collect();
        Ok(JobPage { jobs, next_cursor })
    }

    async fn append_log(&self, id: JobId, lines: Vec<LogLine>) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        inner
            .logs
            .get_mut(&id)
            .ok_or(StoreError::NotFound(id))?
            .extend(lines);
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
            .filter(|l| l.n > after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn interrupt_unfinished(&self, at: OffsetDateTime) -> Result<Vec<Job>, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let mut interrupted = Vec::new();
        for job in inner.jobs.values_mut().filter(|j| !j.status.is_finished()) {
            job.status = JobStatus::Interrupted;
            job.error = Some(INTERRUPTED.into());
            job.finished_at = Some(at);
            interrupted.push(job.clone());
        }
        Ok(interrupted)
    }

    async fn add_event(&self, mut event: ClusterEvent) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        event.id = inner.events.len() as u64 + 1;
        inner.events.push(event);
        Ok(inner.events.len() as u64)
    }

    async fn events(&self, workspace: &str, limit: usize) -> Result<Vec<ClusterEvent>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .events
            .iter()
            .rev()
            .filter(|e| e.workspace == workspace)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn put_schedule(&self, schedule: ScheduleRecord) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        inner.schedules.insert(schedule.workspace.clone(), schedule);
        Ok(())
    }

    async fn schedule(&self, workspace: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        Ok(self.inner.lock().unwrap().schedules.get(workspace).cloned())
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        Ok(self
            .inner
            .lock()
            .unwrap()
            .schedules
            .values()
            .cloned()
            .collect())
    }

    async fn delete_schedule(&self, workspace: &str) -> Result<bool, StoreError> {
        Ok(self
            .inner
            .lock()
            .unwrap()
            .schedules
            .remove(workspace)
            .is_some())
    }

    async fn put_record(&self, kind: &str, key: &str, value: Value) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        inner
            .records
            .insert((kind.to_string(), key.to_string()), value);
        Ok(())
    }

    async fn record(&self, kind: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .records
            .get(&(kind.to_string(), key.to_string()))
            .cloned())
    }

    async fn records(&self, kind: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .records
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect())
    }

    async fn delete_record(&self, kind: &str, key: &str) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        Ok(inner
            .records
            .remove(&(kind.to_string(), key.to_string()))
            .is_some())
    }
}
