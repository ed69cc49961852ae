//! High availability: the cluster as Patroni sees it (probed through the
//! bastion, kept a moment), its current primary, the operations that move
//! or restart members, and the monitor that records leader changes.

mod monitor;
mod operate;
mod plan;
pub(crate) mod probe;

pub use monitor::monitor_leaders;
pub use operate::{
    FailoverRequest, LeaderChange, Operation, ReinitRequest, Reinitialized, RestartRequest,
    Restarted, SwitchoverRequest, operate, result_of,
};
pub use probe::cluster_view;

use serde::Serialize;
use utoipa::ToSchema;

use super::{App, Error};
use crate::store::ClusterEvent;
use crate::workspace::Workspace;

/// Where to write now: the leader's PostgreSQL.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"name": "primary1", "address": "10.0.1.10", "port": 5432}))]
pub struct Primary {
    /// The member's name (its inventory name).
    pub name: String,
    pub address: String,
    pub port: u16,
}

/// The current leader; none (or a failed probe) is
/// [`Error::ClusterUnavailable`] naming why.
pub async fn primary(app: &App, workspace: &Workspace) -> Result<Primary, Error> {
    let view = cluster_view(app, workspace).await?;
    let leader = view
        .leader
        .as_deref()
        .and_then(|name| view.member(name))
        .ok_or_else(|| {
            Error::ClusterUnavailable(format!(
                "the cluster has no leader: {}",
                view.no_leader_reason()
            ))
        })?;
    Ok(Primary {
        name: leader.name.clone(),
        address: leader.address.clone(),
        port: leader.port.unwrap_or(5432),
    })
}

/// The workspace's recorded events, newest first.
pub async fn cluster_events(
    app: &App,
    workspace: &Workspace,
    limit: usize,
) -> Result<Vec<ClusterEvent>, Error> {
    app.runner
        .store()
        .events(workspace.name(), limit)
        .await
        .map_err(Error::internal)
}
