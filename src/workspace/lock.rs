//! At most one mutating job (or file update) per workspace at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::JobId;

/// Who holds a workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A running job.
    Job(JobId),
    /// A request rewriting the workspace's files (generate, configure).
    FileUpdate,
}

/// The workspace locks of this server process.
#[derive(Clone, Default)]
pub struct WorkspaceLocks {
    held: Arc<Mutex<HashMap<String, Holder>>>,
}

/// Releases its workspace when dropped.
#[derive(Debug)]
pub struct LockGuard {
    locks: WorkspaceLocks,
    workspace: String,
}

impl std::fmt::Debug for WorkspaceLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceLocks").finish_non_exhaustive()
    }
}

impl WorkspaceLocks {
    /// Takes the workspace, or says who holds it.
    pub fn acquire(&self, workspace: &str, holder: Holder) -> Result<LockGuard, Holder> {
        let mut held = self.held.lock().unwrap();
        if let Some(current) = held.get(workspace) {
            return Err(*current);
        }
        held.insert(workspace.to_string(), holder);
        Ok(LockGuard {
            locks: self.clone(),
            workspace: workspace.to_string(),
        })
    }

    /// Who holds the workspace now, if anyone.
    pub fn holder(&self, workspace: &str) -> Option<Holder> {
        self.held.lock().unwrap().get(workspace).copied()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.locks.held.lock().unwrap().remove(&self.workspace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let locks = WorkspaceLocks::default();
        let job = JobId::new();
        let _guard = locks.acquire("default", Holder::Job(job)).unwrap();
        assert_eq!(
            locks.acquire("default", Holder::FileUpdate).unwrap_err(),
            Holder::Job(job)
        );
        assert!(locks.acquire("staging", Holder::FileUpdate).is_ok());
    }

    #[test]
    fn dropping_the_guard_frees_the_workspace() {
        let locks = WorkspaceLocks::default();
        drop(locks.acquire("default", Holder::FileUpdate).unwrap());
        assert!(locks.holder("default").is_none());
    }
}
