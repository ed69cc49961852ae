//! Guardrails on self-service: who owns a workspace, whether its plans wait
//! for a second token's approval, when it expires, and how much each token
//! may build. A workspace's [`Policy`] is kept in the job store.

pub(crate) mod approval;
pub mod expiry;
pub mod quotas;

pub use approval::{Approval, ApprovalState, Decision, approval_at_plan, attach_approvals, decide};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{App, Error};
use crate::workspace::{DEFAULT, Workspace};

/// The store's kind for workspace policies, keyed by workspace name.
const POLICY: &str = "workspace_policy";

/// What a workspace's creator and admins decided about it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// The token that created it (`None`: created before owners, or `default`).
    #[serde(default)]
    pub owner: Option<String>,
    /// Its saved plans wait for another token's approval before apply.
    #[serde(default)]
    pub approval_required: bool,
    /// When the server destroys it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When the server destroyed it at expiry; it keeps its history.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expired_at: Option<OffsetDateTime>,
    /// The `expires_at` that `workspace.expiring` was sent for.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub warned_for: Option<OffsetDateTime>,
    /// The destroy expiry started.
    #[serde(default)]
    pub destroy_job: Option<crate::store::JobId>,
}

/// The workspace's policy; `default`'s approval comes from
/// `DEFAULT_APPROVAL_REQUIRED`.
pub async fn policy(app: &App, workspace: &Workspace) -> Result<Policy, Error> {
    let stored = app
        .runner
        .store()
        .record(POLICY, workspace.name())
        .await
        .map_err(Error::of_store)?;
    let mut policy: Policy = match stored {
        Some(value) => serde_json::from_value(value).map_err(Error::internal)?,
        None => Policy::default(),
    };
    if workspace.name() == DEFAULT {
        policy.approval_required = app.config.default_approval_required;
    }
    Ok(policy)
}

/// Records the workspace's policy. The caller holds `app.guardrails` when
/// it read the policy to change it.
pub async fn save_policy(app: &App, workspace: &Workspace, policy: &Policy) -> Result<(), Error> {
    let value = serde_json::to_value(policy).map_err(Error::internal)?;
    app.runner
        .store()
        .put_record(POLICY, workspace.name(), value)
        .await
        .map_err(Error::of_store)
}

/// Forgets a deleted workspace's policy.
pub async fn forget_policy(app: &App, workspace: &Workspace) -> Result<(), Error> {
    app.runner
        .store()
        .delete_record(POLICY, workspace.name())
        .await
        .map(|_| ())
        .map_err(Error::of_store)
}
