//! `configure`: the inventory and settings files for the cluster terraform
//! built (`hosts.ini`, `ssh_config`, `ansible.cfg`, `postgresql.yml`), from
//! the key paths and PostgreSQL settings given and terraform's outputs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::error::files_error;
use super::{Actor, App, Error};
use crate::domain::{HostAddress, KeyPath, PgSettingName, PgSettingValue};
use crate::store::{JobId, JobStatus};
use crate::tools::terraform::{self, Command, Outputs};
use crate::workspace::{LockGuard, Workspace, make_dir, off_runtime, write_atomic};

/// Options of the run endpoints: sent to configure by habit, never settings.
const RUN_OPTIONS: [&str; 2] = ["output", "async"];

/// The body of `configure`: the two key paths, and every other key a
/// PostgreSQL setting. The key paths are read as any JSON value so that every
/// bad field is named at once ([`ConfigureInput::parse`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"bastion_key_path": "/home/ops/.ssh/bastion.pem",
    "db_key_path": "/home/ops/.ssh/db.pem", "max_connections": "50", "max_wal_senders": "15"}))]
pub struct ConfigureRequest {
    /// The bastion's private key: an absolute path to a regular file not
    /// readable by group or others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = true)]
    pub bastion_key_path: Option<Value>,
    /// The database hosts' private key, under the same rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = true)]
    pub db_key_path: Option<Value>,
    /// Patroni's synchronous mode: a commit is acknowledged once a replica
    /// has it, so a failover loses no acknowledged commit (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<bool>)]
    pub synchronous_mode: Option<Value>,
    /// Full backups the repository keeps (1-100, default 2); their
    /// differential and incremental backups and WAL go with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub backup_retention_full: Option<Value>,
    /// PostgreSQL settings: a parameter name (`work_mem`,
    /// `pg_stat_statements.max`) and its value.
    #[serde(flatten)]
    #[schema(value_type = BTreeMap<String, PgSettingValue>)]
    pub settings: Map<String, Value>,
}

/// A checked `configure` body: the key paths and the PostgreSQL settings.
#[derive(Debug, Clone)]
pub struct ConfigureInput {
    bastion_key: KeyPath,
    db_key: KeyPath,
    pub synchronous_mode: bool,
    pub backup_retention_full: Option<u32>,
    pub settings: BTreeMap<String, String>,
}

impl ConfigureInput {
    /// Every problem at once, each named by its field.
    pub fn parse(request: &ConfigureRequest) -> Result<ConfigureInput, Error> {
        let mut problems = Map::new();
        let mut key_path = |field: &str, value: &Option<Value>| -> Option<KeyPath> {
            let result = match value {
                Some(Value::String(raw)) => KeyPath::parse(raw),
                Some(_) => Err("must be a string".into()),
                None => Err("is required".into()),
            };
            result
                .map_err(|e| problems.insert(field.into(), json!(e)))
                .ok()
        };
        let bastion_key = key_path("bastion_key_path", &request.bastion_key_path);
        let db_key = key_path("db_key_path", &request.db_key_path);
        let synchronous_mode = match &request.synchronous_mode {
            None | Some(Value::Null) => false,
            Some(Value::Bool(on)) => *on,
            Some(_) => {
                problems.insert("synchronous_mode".into(), json!("must be true or false"));
                false
            }
        };
        let backup_retention_full = match &request.backup_retention_full {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_u64().or_else(|| value.as_str()?.parse().ok()) {
                Some(n @ 1..=100) => Some(n as u32),
                _ => {
                    problems.insert(
                        "backup_retention_full".into(),
                        json!("must be a whole number of full backups from 1 to 100"),
                    );
                    None
                }
            },
        };
        let mut settings = BTreeMap::new();
        for (name, value) in &request.settings {
            if RUN_OPTIONS.contains(&name.as_str()) {
                problems.insert(
                    name.clone(),
                    json!("is a run option, not a PostgreSQL setting: configure takes key paths and settings"),
                );
                continue;
            }
            match (PgSettingName::parse(name), PgSettingValue::parse(value)) {
                (Ok(n), Ok(v)) => {
                    settings.insert(n.as_str().to_string(), v.as_str().to_string());
                }
                (Err(e), _) | (_, Err(e)) => {
                    problems.insert(name.clone(), json!(e));
                }
            }
        }
        match (bastion_key, db_key) {
            (Some(bastion_key), Some(db_key)) if problems.is_empty() => Ok(ConfigureInput {
                bastion_key,
                db_key,
                synchronous_mode,
                backup_retention_full,
                settings,
            }),
            _ => Err(Error::fields(problems)),
        }
    }
}

/// The hosts terraform built.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Inventory {
    pub bastion: String,
    pub primary: String,
    pub replicas: Vec<String>,
}

/// What `configure` wrote.
#[derive(Debug)]
pub struct Configured {
    /// The `terraform output` job the inventory was read from.
    pub job_id: JobId,
    pub inventory: Inventory,
}

/// Reads terraform's outputs (a job of its own) and writes the inventory
/// and settings files.
pub async fn configure(
    app: &App,
    workspace: &Workspace,
    input: &ConfigureInput,
    actor: &Actor,
) -> Result<Configured, Error> {
    super::guardrails::expiry::check_usable(app, workspace).await?;
    app.check_storage()?;
    let hold = app.hold_for_files(workspace)?;
    workspace.ensure().map_err(files_error(workspace))?;
    let mut spec = terraform::job(
        &app.config,
        workspace,
        Command::Output,
        None,
        json!({ "for": "ansible/configure" }),
    );
    actor.stamp(&mut spec);
    let output = app.submit(spec).await?.wait().await;
    if output.status != JobStatus::Succeeded {
        return Err(Error::tool_failed(
            "Terraform output command failed",
            &output,
        ));
    }
    // Refused input, as the original tool answered: the flow's previous
    // steps are missing.
    let outputs = Outputs::parse(&output.stdout).map_err(Error::invalid)?;
    let inventory = write_configuration(app, workspace, input, &outputs, Some(hold)).await?;
    Ok(Configured {
        job_id: output.job_id,
        inventory,
    })
}

/// Writes `hosts.ini`, `ssh_config`, `ansible.cfg` and `postgresql.yml` for
/// the cluster in terraform's outputs; returns the inventory. The caller
/// holds the workspace; `hold`, its guard when the caller may be dropped (a
/// request whose client goes away), is kept until the files are written.
pub(crate) async fn write_configuration(
    app: &App,
    workspace: &Workspace,
    input: &ConfigureInput,
    outputs: &Outputs,
    hold: Option<LockGuard>,
) -> Result<Inventory, Error> {
    let hosts = Hosts::from_outputs(outputs).map_err(Error::invalid)?;
    let dir = workspace.ansible_dir();
    let context = json!({
        "dir": dir,
        "ansible_dir": std::path::absolute(&app.config.ansible_dir).map_err(Error::internal)?,
        "bastion": hosts.bastion.as_str(),
        "bastion_private": hosts.bastion_private.as_ref().map(HostAddress::as_str),
        "primary": hosts.primary.as_str(),
        "replicas": hosts.replicas.iter().enumerate().map(|(i, a)| json!({
            "name": format!("replica{}", i + 1),
            "address": a.as_str(),
        })).collect::<Vec<_>>(),
        "ssh_user": hosts.ssh_user,
        "bastion_key_path": input.bastion_key.as_str(),
        "db_key_path": input.db_key.as_str(),
        "strict_host_key_checking": "accept-new",
        "control_path": control_path(),
        "settings": input.settings,
        "synchronous_mode": input.synchronous_mode,
        "stack_vars": hosts.stack_vars,
        "backup_repository": hosts.backup_repository,
        "backup_retention_full": input.backup_retention_full,
    });
    let mut files = Vec::new();
    for (template, file) in [
        ("hosts.ini.j2", "hosts.ini"),
        ("ssh_config.j2", "ssh_config"),
        ("ansible.cfg.j2", "ansible.cfg"),
        ("postgresql.yml.j2", "postgresql.yml"),
    ] {
        let text = app
            .renderer
            .render(template, &context)
            .map_err(Error::internal)?;
        files.push((dir.join(file), text));
    }
    off_runtime(move || {
        let _hold = hold;
        for sub in ["tmp", "home"] {
            make_dir(&dir.join(sub))?;
        }
        for (path, text) in files {
            write_atomic(&path, text.as_bytes())?;
        }
        // The hosts may be new machines on old addresses: learn their keys again.
        let _ = std::fs::remove_file(dir.join("known_hosts"));
        Ok(())
    })
    .await
    .map_err(files_error(workspace))?;
    Ok(Inventory {
        bastion: hosts.bastion.as_str().to_string(),
        primary: hosts.primary.as_str().to_string(),
        replicas: hosts
            .replicas
            .iter()
            .map(|r| r.as_str().to_string())
            .collect(),
    })
}

/// Where ssh keeps its shared connections. A Unix socket path holds at most
/// 107 bytes and ssh appends a 17-byte suffix while creating it, so the
/// workspace directory is too deep: `~/.ssh` (private, created if missing)
/// is short. Without a home, connections are not shared.
pub(crate) fn control_path() -> Option<&'static str> {
    use std::os::unix::fs::PermissionsExt;
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    let dir = std::path::Path::new(&home).join(".ssh");
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok()?;
    }
    let short_enough = dir.as_os_str().len() + "/pgc-".len() + 40 + 17 < 108;
    short_enough.then_some("%d/.ssh/pgc-%C")
}

/// The hosts and stack variables read from terraform's outputs.
struct Hosts {
    bastion: HostAddress,
    /// The bastion's leg on the private network (an etcd member).
    bastion_private: Option<HostAddress>,
    primary: HostAddress,
    replicas: Vec<HostAddress>,
    ssh_user: String,
    stack_vars: Map<String, Value>,
    /// Where pgBackRest keeps backups (`type`, `path`, `bucket`, ...); empty:
    /// the stack has none.
    backup_repository: Map<String, Value>,
}

impl Hosts {
    fn from_outputs(outputs: &Outputs) -> Result<Hosts, String> {
        let values = &outputs.values;
        let address = |name: &str| -> Result<HostAddress, String> {
            match values.get(name) {
                Some(Value::String(s)) => {
                    HostAddress::parse(s).map_err(|e| format!("output {name}: {e}"))
                }
                Some(_) => Err(format!("output {name} is not a string")),
                None => Err(format!(
                    "terraform has no output {name}: apply the stack first (/terraform/plan, /terraform/apply)"
                )),
            }
        };
        let bastion = address("bastion_eip_address")?;
        // Older stacks lack it; the playbook then puts etcd on the database hosts' network.
        let bastion_private = match values.get("bastion_private_address") {
            None | Some(Value::Null) => None,
            Some(_) => Some(address("bastion_private_address")?),
        };
        let primary = address("primary_db_addr")?;
        let replicas = match values.get("replica_db_addresses") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => HostAddress::parse(s),
                    other => Err(format!("{other} is not an address")),
                })
                .collect::<Result<_, _>>()
                .map_err(|e| format!("output replica_db_addresses: {e}"))?,
            Some(_) => return Err("output replica_db_addresses is not a list".into()),
        };
        let ssh_user = match values.get("ssh_user") {
            None | Some(Value::Null) => "ubuntu".to_string(),
            Some(Value::String(user)) if is_user_name(user) => user.clone(),
            Some(other) => return Err(format!("output ssh_user {other} is not a user name")),
        };
        let stack_vars = match values.get("ansible_vars") {
            Some(Value::Object(vars)) => string_fields("ansible_vars", vars)?,
            _ => Map::new(),
        };
        let backup_repository = match values.get("backup_repository") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(fields)) => string_fields("backup_repository", fields)?,
            Some(_) => return Err("output backup_repository is not an object".into()),
        };
        Ok(Hosts {
            bastion,
            bastion_private,
            primary,
            replicas,
            ssh_user,
            stack_vars,
            backup_repository,
        })
    }
}

/// An output's fields as plain strings for the playbook, each name a
/// variable name and each value a setting-safe string.
fn string_fields(output: &str, fields: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut strings = Map::new();
    for (name, value) in fields {
        if !is_var_name(name) {
            return Err(format!("output {output}: {name:?} is not a variable name"));
        }
        let value =
            PgSettingValue::parse(value).map_err(|e| format!("output {output}.{name}: {e}"))?;
        strings.insert(name.clone(), json!(value.as_str()));
    }
    Ok(strings)
}

fn is_user_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && s.len() <= 32
}

fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ConfigureRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let refused = ConfigureInput::parse(&request(json!({
            "db_key_path": 7, "max_connections": "5{{x}}", "bad name": "1", "async": true
        })));
        let Err(Error::Invalid { fields, .. }) = refused else {
            panic!("expected refused fields");
        };
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "async",
                "bad name",
                "bastion_key_path",
                "db_key_path",
                "max_connections"
            ]
        );
        assert_eq!(fields["bastion_key_path"], "is required");
        assert_eq!(fields["db_key_path"], "must be a string");
    }

    #[test]
    fn synchronous_mode_is_a_boolean_not_a_setting() {
        let refused = ConfigureInput::parse(&request(json!({
            "bastion_key_path": "/k/b", "db_key_path": "/k/d", "synchronous_mode": "yes"
        })));
        let Err(Error::Invalid { fields, .. }) = refused else {
            panic!("expected a refused field");
        };
        assert_eq!(fields["synchronous_mode"], "must be true or false");
        let Err(Error::Invalid { fields, .. }) = ConfigureInput::parse(&request(json!({
            "db_key_path": 1, "synchronous_mode": true
        }))) else {
            panic!("expected refused key paths");
        };
        assert!(!fields.contains_key("synchronous_mode"));
    }

    #[test]
    fn backup_retention_is_a_count_of_full_backups() {
        use std::os::unix::fs::PermissionsExt;
        let key = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(key.path(), "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        std::fs::set_permissions(key.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = key.path().to_str().unwrap();
        let parse = |value: Value| {
            ConfigureInput::parse(&request(json!({
                "bastion_key_path": path, "db_key_path": path, "backup_retention_full": value
            })))
        };
        assert_eq!(parse(json!(3)).unwrap().backup_retention_full, Some(3));
        assert_eq!(parse(json!("7")).unwrap().backup_retention_full, Some(7));
        for bad in [
            json!(0),
            json!(101),
            json!(-1),
            json!(1.5),
            json!("two"),
            json!(true),
        ] {
            let Err(Error::Invalid { fields, .. }) = parse(bad.clone()) else {
                panic!("{bad} was accepted");
            };
            assert!(fields.contains_key("backup_retention_full"), "{bad}");
        }
    }

    #[test]
    fn the_backup_repository_output_reaches_the_playbook_as_strings() {
        let outputs = Outputs::parse(r#"{
            "bastion_eip_address": {"value": "10.0.0.1", "sensitive": false, "type": "string"},
            "primary_db_addr": {"value": "10.0.1.10", "sensitive": false, "type": "string"},
            "backup_repository": {"value": {"type": "posix", "path": "/srv/backups"}, "sensitive": false, "type": "object"}
        }"#).unwrap();
        let hosts = Hosts::from_outputs(&outputs).unwrap();
        assert_eq!(hosts.backup_repository["type"], "posix");
        assert_eq!(hosts.backup_repository["path"], "/srv/backups");
        let outputs = Outputs::parse(
            r#"{
            "bastion_eip_address": {"value": "10.0.0.1", "sensitive": false, "type": "string"},
            "primary_db_addr": {"value": "10.0.1.10", "sensitive": false, "type": "string"},
            "backup_repository": {"value": {"Bad-Name": "x"}, "sensitive": false, "type": "object"}
        }"#,
        )
        .unwrap();
        let problem = Hosts::from_outputs(&outputs).err().unwrap();
        assert!(problem.contains("backup_repository"), "{problem}");
    }

    #[test]
    fn the_body_round_trips_through_a_deploy_record() {
        let body = json!({"bastion_key_path": "/k/b", "db_key_path": "/k/d", "work_mem": "4MB"});
        let typed = request(body.clone());
        assert_eq!(typed.settings.len(), 1);
        assert_eq!(serde_json::to_value(&typed).unwrap(), body);
    }

    #[test]
    fn outputs_without_the_primary_say_to_apply_first() {
        let outputs = Outputs::parse(r#"{"bastion_eip_address": {"value": "10.0.0.1", "sensitive": false, "type": "string"}}"#).unwrap();
        let problem = Hosts::from_outputs(&outputs).err().unwrap();
        assert!(problem.contains("primary_db_addr"), "{problem}");
        assert!(problem.contains("apply the stack first"), "{problem}");
    }
}
