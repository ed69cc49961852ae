//! What an operation can fail with besides a tool's own failure recorded
//! on its job. The routes turn each variant into one answer.

use serde_json::{Map, Value};

use crate::disk::StorageFault;
use crate::runner::RunOutput;
use crate::store::{JobId, JobStatus};
use crate::workspace::{Holder, Workspace};

/// A boxed cause, kept for the server's log.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is not acceptable: each field and the reason (none when
    /// the input as a whole is refused).
    #[error("{message}")]
    Invalid {
        message: String,
        fields: Map<String, Value>,
    },
    /// Variables the stack does not declare, required ones not given, and
    /// values its types or validations refuse.
    #[error("invalid terraform variables")]
    Variables {
        unknown: Vec<String>,
        missing: Vec<String>,
        invalid: Map<String, Value>,
    },
    /// A tool the operation ran did not succeed: its job and output tail.
    #[error("{error}")]
    ToolFailed {
        error: String,
        details: String,
        job_id: JobId,
        status: JobStatus,
    },
    /// A job holds the workspace.
    #[error("workspace {workspace} is busy with job {job_id}")]
    Busy { workspace: String, job_id: JobId },
    /// Something must happen first, or the workspace's state forbids it.
    #[error("{0}")]
    Conflict(String),
    /// The saved plan (its job) waits for another token's approval.
    #[error("{message}")]
    AwaitingApproval { message: String, job_id: JobId },
    /// A guardrail refuses the caller: `rule` names it (`four_eyes`,
    /// `quota`, `owner`), `quota` its limit and use.
    #[error("{message}")]
    Denied {
        message: String,
        rule: &'static str,
        quota: Option<Value>,
    },
    /// The disk under `DATA_DIR` cannot take a write now (full, read-only,
    /// failing): nothing was started or written; retry once it can.
    #[error("{message}")]
    Unavailable {
        message: String,
        fault: StorageFault,
    },
    /// The cluster could not be asked (the bastion or Patroni did not
    /// answer), or it has no leader to act on now: retry shortly.
    #[error("{0}")]
    ClusterUnavailable(String),
    /// No such workspace, job or thing.
    #[error("{0}")]
    NotFound(String),
    /// A fault of the server; the cause is logged, never shown.
    #[error("{0}")]
    Internal(#[source] BoxError),
}

impl Error {
    /// Refused input, naming one field.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Error {
        let field = field.into();
        let reason = reason.into();
        let mut fields = Map::new();
        fields.insert(field.clone(), Value::String(reason.clone()));
        Error::Invalid {
            message: format!("invalid field '{field}': {reason}"),
            fields,
        }
    }

    /// Refused input, naming each field (one is said as [`Error::field`]
    /// says it).
    pub fn fields(fields: Map<String, Value>) -> Error {
        if let Some((field, Value::String(reason))) = fields.iter().next()
            && fields.len() == 1
        {
            return Error::field(field.clone(), reason.clone());
        }
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        Error::Invalid {
            message: format!("invalid fields: {}", names.join(", ")),
            fields,
        }
    }

    /// Refused input as a whole.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid {
            message: message.into(),
            fields: Map::new(),
        }
    }

    pub fn internal(err: impl Into<BoxError>) -> Error {
        Error::Internal(err.into())
    }

    /// The workspace is held by a job, or by another request's file update.
    pub fn busy(workspace: String, holder: Holder) -> Error {
        match holder {
            Holder::Job(job_id) => Error::Busy { workspace, job_id },
            Holder::FileUpdate => Error::Conflict(format!(
                "workspace '{workspace}' is busy with a file update; retry in a moment"
            )),
        }
    }

    /// A failed write under `DATA_DIR` (`dir`): a disk fault is a refusal
    /// to retry naming the cause, anything else a server fault.
    pub fn of_io(err: std::io::Error, dir: &str, what: &str) -> Error {
        match StorageFault::of_io(&err) {
            Some(fault) => Error::Unavailable {
                message: format!(
                    "{} under DATA_DIR ({dir}): {what}; retry once it can be written",
                    fault.describe()
                ),
                fault,
            },
            None => Error::internal(err),
        }
    }

    /// A job store that failed: a fault of the disk under it is a refusal to
    /// retry naming the cause, anything else a server fault.
    pub fn of_store(err: crate::store::StoreError) -> Error {
        match err.storage_fault() {
            Some(fault) => Error::Unavailable {
                message: format!("{} under the job store: {err}", fault.describe()),
                fault,
            },
            None => Error::internal(err),
        }
    }

    /// A job that did not succeed, as the operation that waited for it fails.
    pub fn tool_failed(error: impl Into<String>, output: &RunOutput) -> Error {
        Error::ToolFailed {
            error: error.into(),
            details: details(output),
            job_id: output.job_id,
            status: output.status,
        }
    }
}

/// Maps an error preparing a workspace's files. A `DELETE
/// /workspaces/{name}` can remove the directory between an operation's check
/// that the workspace exists and this: that is a missing workspace like any
/// other, not a server fault.
pub fn files_error(workspace: &Workspace) -> impl Fn(std::io::Error) -> Error {
    let workspace = workspace.clone();
    move |err| {
        if err.kind() == std::io::ErrorKind::NotFound && !workspace.exists() {
            let name = workspace.name();
            Error::NotFound(format!("no workspace '{name}': it was deleted meanwhile"))
        } else {
            let written = format!("workspace '{}' could not be written", workspace.name());
            Error::of_io(err, &workspace.root().display().to_string(), &written)
        }
    }
}

/// A failed job's details: why it ended, stderr, and the end of stdout
/// (Ansible reports task failures on stdout).
pub fn details(output: &RunOutput) -> String {
    let mut parts = Vec::new();
    if let Some(error) = &output.error {
        parts.push(error.clone());
    }
    if !output.stderr_tail.is_empty() {
        parts.push(output.stderr_tail.join("\n"));
    }
    if !output.stdout_tail.is_empty() {
        parts.push(format!(
            "--- last {} lines of stdout ---\n{}",
            output.stdout_tail.len(),
            output.stdout_tail.join("\n")
        ));
    }
    parts.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_removed_under_an_operation_is_not_found_and_other_errors_are_internal() {
        let data = tempfile::tempdir().unwrap();
        let workspace = Workspace::new(data.path(), "race");
        let not_found = || std::io::Error::from(std::io::ErrorKind::NotFound);

        // Gone: as if DELETE /workspaces/race ran meanwhile.
        let gone = files_error(&workspace)(not_found());
        assert!(matches!(gone, Error::NotFound(_)), "{gone:?}");

        // Still there: a missing file is the server's problem.
        workspace.create("stack").unwrap();
        assert!(workspace.exists());
        let missing = files_error(&workspace)(not_found());
        assert!(matches!(missing, Error::Internal(_)), "{missing:?}");
        let full = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
        let Error::Unavailable { message, fault } = files_error(&workspace)(full) else {
            panic!("a full disk is a refusal to retry");
        };
        assert_eq!(fault, StorageFault::NoSpace);
        assert!(
            message.starts_with("no space left on device under DATA_DIR ("),
            "{message}"
        );
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(matches!(
            files_error(&workspace)(denied),
            Error::Internal(_)
        ));
    }
}
