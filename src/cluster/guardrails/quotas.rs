//! Quotas per token name: how many workspaces a token may own and how many
//! database hosts (a primary and its replicas) they may hold together.
//! Checked before anything is written; an admin sets them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::policy;
use crate::cluster::{Actor, App, Error, list_workspaces};
use crate::workspace::Workspace;

/// The store's kind for quotas, keyed by token name.
const QUOTA: &str = "quota";

/// A token's limits; a limit not set is no limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Quota {
    /// Workspaces the token may own (it creates them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub workspaces: Option<u64>,
    /// Database hosts (1 + `replica_count` per workspace) its workspaces may
    /// hold together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub db_hosts: Option<u64>,
}

/// A token's quota and what it uses now.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaUse {
    pub token: String,
    pub limits: Quota,
    /// Workspaces it owns now and the database hosts their variables ask for.
    pub used: Usage,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct Usage {
    pub workspaces: u64,
    pub db_hosts: u64,
}

/// Checks a quota's body: each limit a whole number from 0, at least one.
pub fn parse_quota(body: &Map<String, Value>) -> Result<Quota, Error> {
    let mut problems = Map::new();
    let mut quota = Quota::default();
    for (key, value) in body {
        let limit = match value.as_u64() {
            Some(n) => Some(n),
            None if value.is_null() => None,
            None => {
                problems.insert(key.clone(), json!("must be a whole number from 0, or null"));
                continue;
            }
        };
        match key.as_str() {
            "workspaces" => quota.workspaces = limit,
            "db_hosts" => quota.db_hosts = limit,
            _ => {
                problems.insert(
                    key.clone(),
                    json!("is not a quota: use workspaces or db_hosts"),
                );
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::fields(problems));
    }
    if quota == Quota::default() {
        return Err(Error::invalid(
            "a quota needs workspaces or db_hosts (DELETE /quotas/{token_name} removes one)",
        ));
    }
    Ok(quota)
}

pub async fn set_quota(app: &App, token: &str, quota: &Quota) -> Result<QuotaUse, Error> {
    crate::tokens::check_name(token).map_err(|e| Error::field("token_name", e))?;
    let value = serde_json::to_value(quota).map_err(Error::internal)?;
    app.runner
        .store()
        .put_record(QUOTA, token, value)
        .await
        .map_err(Error::of_store)?;
    Ok(QuotaUse {
        token: token.to_string(),
        limits: quota.clone(),
        used: usage(app, token, None).await?,
    })
}

/// Removes a token's quota; whether it had one.
pub async fn delete_quota(app: &App, token: &str) -> Result<bool, Error> {
    crate::tokens::check_name(token).map_err(|e| Error::field("token_name", e))?;
    app.runner
        .store()
        .delete_record(QUOTA, token)
        .await
        .map_err(Error::of_store)
}

/// Every quota with its use, by token name.
pub async fn list_quotas(app: &App) -> Result<Vec<QuotaUse>, Error> {
    let records = app
        .runner
        .store()
        .records(QUOTA)
        .await
        .map_err(Error::of_store)?;
    let mut quotas = Vec::new();
    for (token, value) in records {
        let limits: Quota = serde_json::from_value(value).map_err(Error::internal)?;
        let used = usage(app, &token, None).await?;
        quotas.push(QuotaUse {
            token,
            limits,
            used,
        });
    }
    Ok(quotas)
}

async fn quota_of(app: &App, token: &str) -> Result<Option<Quota>, Error> {
    let stored = app
        .runner
        .store()
        .record(QUOTA, token)
        .await
        .map_err(Error::of_store)?;
    stored
        .map(serde_json::from_value)
        .transpose()
        .map_err(Error::internal)
}

/// What the token's workspaces use, leaving out `except` (the workspace a
/// request is about to change). Expired workspaces hold nothing.
async fn usage(app: &App, token: &str, except: Option<&str>) -> Result<Usage, Error> {
    let mut used = Usage::default();
    for info in list_workspaces(app) {
        let workspace = app.workspace(&info.name);
        let owned = policy(app, &workspace).await?;
        if owned.owner.as_deref() != Some(token) || owned.expired_at.is_some() {
            continue;
        }
        used.workspaces += 1;
        if except != Some(info.name.as_str()) {
            used.db_hosts += db_hosts(app, &workspace);
        }
    }
    Ok(used)
}

/// The database hosts a workspace's `terraform.tfvars` asks for: 1 +
/// `replica_count` (the stack's default when not given); 0 before generate.
fn db_hosts(app: &App, workspace: &Workspace) -> u64 {
    let Ok(text) = std::fs::read_to_string(workspace.tfvars()) else {
        return 0;
    };
    let given = hcl::from_str::<Map<String, Value>>(&text)
        .ok()
        .and_then(|vars| vars.get("replica_count").and_then(Value::as_u64));
    1 + given.unwrap_or_else(|| default_replicas(app, workspace))
}

fn default_replicas(app: &App, workspace: &Workspace) -> u64 {
    app.stacks
        .get(&app.stack_dir(workspace))
        .ok()
        .and_then(|stack| stack.get("replica_count").and_then(|v| v.default.clone()))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

/// Refuses a new workspace beyond the caller's `workspaces` quota.
pub async fn check_new_workspace(app: &App, actor: &Actor) -> Result<(), Error> {
    let Some(token) = actor.name.as_deref() else {
        return Ok(());
    };
    let Some(limit) = quota_of(app, token).await?.and_then(|q| q.workspaces) else {
        return Ok(());
    };
    let used = usage(app, token, None).await?;
    if used.workspaces < limit {
        return Ok(());
    }
    Err(denied(token, "workspaces", limit, used.workspaces, 1))
}

/// Refuses variables whose `replica_count` would take the caller's
/// workspaces beyond its `db_hosts` quota. The workspace's own hosts are
/// counted as the variables ask, not as they were.
pub async fn check_db_hosts(
    app: &App,
    workspace: &Workspace,
    actor: &Actor,
    variables: &Map<String, Value>,
) -> Result<(), Error> {
    let Some(token) = actor.name.as_deref() else {
        return Ok(());
    };
    let Some(limit) = quota_of(app, token).await?.and_then(|q| q.db_hosts) else {
        return Ok(());
    };
    // Given as a number or a string of one, as generate accepts it.
    let replicas = variables
        .get("replica_count")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
        .unwrap_or_else(|| default_replicas(app, workspace));
    let requested = 1 + replicas;
    let used = usage(app, token, Some(workspace.name())).await?;
    if used.db_hosts + requested <= limit {
        return Ok(());
    }
    Err(denied(token, "db_hosts", limit, used.db_hosts, requested))
}

fn denied(token: &str, name: &str, limit: u64, used: u64, requested: u64) -> Error {
    Error::Denied {
        message: format!(
            "quota '{name}' of token '{token}' is {limit}: {used} in use, this request needs \
             {requested} more"
        ),
        rule: "quota",
        quota: Some(json!({
            "name": name, "token": token, "limit": limit, "used": used, "requested": requested,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_quota_is_whole_numbers_from_0_and_names_each_bad_field() {
        let quota = parse_quota(&body(json!({"workspaces": 2, "db_hosts": 0}))).unwrap();
        assert_eq!(quota.workspaces, Some(2));
        assert_eq!(quota.db_hosts, Some(0));
        for (bad, field) in [
            (json!({"workspaces": -1}), "workspaces"),
            (json!({"db_hosts": 1.5}), "db_hosts"),
            (json!({"db_hosts": "3"}), "db_hosts"),
            (json!({"cpus": 3}), "cpus"),
        ] {
            match parse_quota(&body(bad)) {
                Err(Error::Invalid { fields, .. }) => assert!(fields.contains_key(field)),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            parse_quota(&Map::new()),
            Err(Error::Invalid { .. })
        ));
    }
}
