//! `/ansible/configure` (inventory and settings from terraform's outputs) and
//! `/ansible/run` (the playbook).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    DEFAULT_WORKSPACE, PreferAsync, RunReply, RunResult, StartedBy, WorkspaceParam, details,
};
use crate::domain::{HostAddress, KeyPath, PgSettingName, PgSettingValue, PostgresqlVersion};
use crate::error::{ApiError, ApiJson, ErrorBody, OptionalJson};
use crate::runner::{JobSpec, Secret};
use crate::startup::AppState;
use crate::store::JobStatus;
use crate::tools::ansible::{playbook_job, vault_encrypt_job, vault_secrets};
use crate::tools::terraform::{self, Command, Outputs};
use crate::workspace::{LockGuard, Workspace, make_dir, off_runtime, write_atomic};

/// `configure` and `run` act on `default`; `startup` nests the same under
/// `/workspaces/{name}`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(configure))
        .routes(routes!(run))
}

/// `/ansible/vault`: one vault file for every workspace.
pub fn vault_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(set_vault))
}

/// Request keys of `configure` that are not PostgreSQL settings.
const KEY_FIELDS: [&str; 2] = ["bastion_key_path", "db_key_path"];

/// Options of the run endpoints: sent to configure by habit, never settings.
const RUN_OPTIONS: [&str; 2] = ["output", "async"];

/// The body of `configure`, as documented: the two key paths, and every other
/// key a PostgreSQL setting. The handler reads the object key by key, to name
/// every bad field at once.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"bastion_key_path": "/home/ops/.ssh/bastion.pem",
    "db_key_path": "/home/ops/.ssh/db.pem", "max_connections": "50", "max_wal_senders": "15"}))]
#[allow(dead_code)]
pub struct ConfigureRequest {
    /// The bastion's private key: an absolute path to a regular file not
    /// readable by group or others.
    bastion_key_path: String,
    /// The database hosts' private key, under the same rules.
    db_key_path: String,
    /// PostgreSQL settings: a parameter name (`work_mem`,
    /// `pg_stat_statements.max`) and a string, number or boolean without
    /// control characters or Jinja sequences.
    #[serde(flatten)]
    #[schema(value_type = std::collections::BTreeMap<String, PgSettingDoc>)]
    settings: Map<String, Value>,
}

/// A PostgreSQL setting's value.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum PgSettingDoc {
    Text(String),
    Number(f64),
    Flag(bool),
}

/// `configure`'s success: the inventory written and the settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigureResult {
    pub message: String,
    /// The `terraform output` job the inventory was read from.
    pub job_id: crate::store::JobId,
    pub inventory: Inventory,
    /// The PostgreSQL settings written to `postgresql.yml`, as strings.
    pub settings: std::collections::BTreeMap<String, String>,
}

/// The hosts terraform built.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Inventory {
    pub bastion: String,
    pub primary: String,
    pub replicas: Vec<String>,
}

/// Writes `hosts.ini`, `ssh_config`, `ansible.cfg` and `postgresql.yml` for
/// the cluster terraform built.
#[utoipa::path(
    post,
    path = "/ansible/configure",
    operation_id = "ansible_configure",
    tag = "ansible",
    summary = "Write the inventory and settings for the cluster terraform built",
    description = "Reads terraform's outputs (`bastion_eip_address`, `primary_db_addr`, \
        `replica_db_addresses`, and optionally `ssh_user` and `ansible_vars`) and writes \
        `hosts.ini`, `ssh_config`, `ansible.cfg` and `postgresql.yml` into the workspace.",
    request_body(content = ConfigureRequest, description = "Key paths and PostgreSQL settings"),
    responses(
        (status = 200, description = "The inventory and settings are written", body = ConfigureResult),
        (status = 400, description = "Bad key paths or settings (`fields`), terraform output \
            failed (`job_id`, `status`, `details`), or the stack is not applied yet", body = ErrorBody),
        (status = 409, response = crate::openapi::Busy),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn configure(
    State(state): State<AppState>,
    WorkspaceParam(workspace): WorkspaceParam,
    started_by: StartedBy,
    OptionalJson(body): OptionalJson<Option<Map<String, Value>>>,
) -> Result<Json<ConfigureResult>, ApiError> {
    let Some(body) = body else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object with bastion_key_path, db_key_path and PostgreSQL settings",
        ));
    };
    let input = ConfigureInput::parse(&body)?;

    let hold = state.hold_for_files(&workspace)?;
    workspace
        .ensure()
        .map_err(super::workspace_files_error(&workspace))?;
    let out_spec = terraform::job(
        &state.config,
        &workspace,
        Command::Output,
        None,
        json!({ "for": "ansible/configure" }),
    );
    let mut out_spec = out_spec;
    started_by.stamp(&mut out_spec);
    let output = state.submit(out_spec).await?.wait().await;
    if output.status != JobStatus::Succeeded {
        return Err(ApiError::ToolFailed {
            error: "Terraform output command failed".into(),
            details: details(&output),
            job_id: output.job_id,
            status: output.status,
        });
    }
    // 400, as the original tool answered: the flow's previous steps are missing.
    let outputs = Outputs::parse(&output.stdout).map_err(ApiError::bad_request)?;
    let inventory = write_configuration(&state, &workspace, &input, &outputs, Some(hold)).await?;
    Ok(Json(ConfigureResult {
        message: "Ansible configuration completed successfully".into(),
        job_id: output.job_id,
        inventory,
        settings: input.settings,
    }))
}

/// A checked `configure` body: the key paths and the PostgreSQL settings.
#[derive(Debug, Clone)]
pub(crate) struct ConfigureInput {
    bastion_key: KeyPath,
    db_key: KeyPath,
    settings: std::collections::BTreeMap<String, String>,
}

impl ConfigureInput {
    /// Every problem at once, each named by its field.
    pub(crate) fn parse(body: &Map<String, Value>) -> Result<ConfigureInput, ApiError> {
        let mut problems = Map::new();
        let mut key_path = |field: &str| -> Option<KeyPath> {
            let result = match body.get(field) {
                Some(Value::String(raw)) => KeyPath::parse(raw),
                Some(_) => Err("must be a string".into()),
                None => Err("is required".into()),
            };
            result
                .map_err(|e| problems.insert(field.into(), json!(e)))
                .ok()
        };
        let bastion_key = key_path("bastion_key_path");
        let db_key = key_path("db_key_path");
        let mut settings = std::collections::BTreeMap::new();
        for (name, value) in body
            .iter()
            .filter(|(k, _)| !KEY_FIELDS.contains(&k.as_str()))
        {
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
                settings,
            }),
            _ => Err(ApiError::fields(problems)),
        }
    }
}

/// Writes `hosts.ini`, `ssh_config`, `ansible.cfg` and `postgresql.yml` for
/// the cluster in terraform's outputs; returns the inventory. The caller
/// holds the workspace; `hold`, its guard when the caller may be dropped (a
/// request whose client goes away), is kept until the files are written.
pub(crate) async fn write_configuration(
    state: &AppState,
    workspace: &Workspace,
    input: &ConfigureInput,
    outputs: &Outputs,
    hold: Option<LockGuard>,
) -> Result<Inventory, ApiError> {
    let cluster = Cluster::from_outputs(outputs).map_err(ApiError::bad_request)?;
    let dir = workspace.ansible_dir();
    let context = json!({
        "dir": dir,
        "ansible_dir": std::path::absolute(&state.config.ansible_dir).map_err(ApiError::internal)?,
        "bastion": cluster.bastion.as_str(),
        "primary": cluster.primary.as_str(),
        "replicas": cluster.replicas.iter().enumerate().map(|(i, a)| json!({
            "name": format!("replica{}", i + 1),
            "address": a.as_str(),
        })).collect::<Vec<_>>(),
        "ssh_user": cluster.ssh_user,
        "bastion_key_path": input.bastion_key.as_str(),
        "db_key_path": input.db_key.as_str(),
        "strict_host_key_checking": "accept-new",
        "control_path": control_path(),
        "settings": input.settings,
        "stack_vars": cluster.stack_vars,
    });
    let mut files = Vec::new();
    for (template, file) in [
        ("hosts.ini.j2", "hosts.ini"),
        ("ssh_config.j2", "ssh_config"),
        ("ansible.cfg.j2", "ansible.cfg"),
        ("postgresql.yml.j2", "postgresql.yml"),
    ] {
        let text = state
            .renderer
            .render(template, &context)
            .map_err(ApiError::internal)?;
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
    .map_err(super::workspace_files_error(workspace))?;
    Ok(Inventory {
        bastion: cluster.bastion.as_str().to_string(),
        primary: cluster.primary.as_str().to_string(),
        replicas: cluster
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
fn control_path() -> Option<&'static str> {
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
struct Cluster {
    bastion: HostAddress,
    primary: HostAddress,
    replicas: Vec<HostAddress>,
    ssh_user: String,
    stack_vars: Map<String, Value>,
}

impl Cluster {
    fn from_outputs(outputs: &Outputs) -> Result<Cluster, String> {
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
        let mut stack_vars = Map::new();
        if let Some(Value::Object(vars)) = values.get("ansible_vars") {
            for (name, value) in vars {
                if !is_var_name(name) {
                    return Err(format!(
                        "output ansible_vars: {name:?} is not a variable name"
                    ));
                }
                let value = PgSettingValue::parse(value)
                    .map_err(|e| format!("output ansible_vars.{name}: {e}"))?;
                stack_vars.insert(name.clone(), json!(value.as_str()));
            }
        }
        Ok(Cluster {
            bastion,
            primary,
            replicas,
            ssh_user,
            stack_vars,
        })
    }
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

/// Options of `/ansible/run`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"output": true, "postgresql_version": 16}))]
pub struct RunRequest {
    /// Return the playbook's standard output in the answer.
    #[serde(default)]
    output: bool,
    /// Answer `202` at once with the job instead of waiting for its end.
    #[serde(default, rename = "async")]
    run_async: bool,
    /// The PostgreSQL major version to install, 10 to 30 (default 16), as a
    /// number or a string of digits. `Some(null)` when sent as null: that is
    /// an error, not the default.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = postgresql_version_schema)]
    postgresql_version: Option<Value>,
}

/// What `PostgresqlVersion::parse` accepts.
fn postgresql_version_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(10))
                .maximum(Some(30)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^0*([12][0-9]|30)$")),
        )
        .description(Some(
            "The PostgreSQL major version to install, 10 to 30 (default 16), as a number or a \
             string of digits",
        ))
        .examples([json!(16)])
        .into()
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Runs `site.yml` against the configured inventory.
#[utoipa::path(
    post,
    path = "/ansible/run",
    operation_id = "ansible_run",
    tag = "ansible",
    summary = "Run the playbook against the configured inventory",
    description = "Runs `ansible-playbook ansible/site.yml -i hosts.ini --vault-password-file \
        /dev/fd/3 -e @postgresql.yml -e @<ANSIBLE_VAULT_FILE> -e '{\"postgresql_version\": N}'`.",
    params(PreferAsync),
    request_body(content = Option<RunRequest>, description = "Run options; the body may be omitted"),
    responses(
        (status = 200, description = "The playbook succeeded", body = RunResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "Invalid options, no vault password or vault file, no \
            inventory yet (call configure), or the playbook failed (`job_id`, `status`, \
            `details`)", body = ErrorBody),
        (status = 409, response = crate::openapi::Busy),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn run(
    State(state): State<AppState>,
    WorkspaceParam(workspace): WorkspaceParam,
    started_by: StartedBy,
    PreferAsync(prefer_async): PreferAsync,
    OptionalJson(mut request): OptionalJson<RunRequest>,
) -> Result<RunReply<RunResult>, ApiError> {
    request.run_async |= prefer_async;
    let version = match &request.postgresql_version {
        None => PostgresqlVersion::DEFAULT,
        Some(raw) => {
            PostgresqlVersion::parse(raw).map_err(|e| ApiError::field("postgresql_version", e))?
        }
    };
    let request_record = json!({
        "output": request.output,
        "async": request.run_async,
        "postgresql_version": version.get(),
    });
    let mut spec = playbook_spec(&state, &workspace, version, request_record).await?;
    started_by.stamp(&mut spec);
    spec.capture_stdout = request.output && !request.run_async;
    let handle = state.submit(spec).await?;
    let include_output = request.output;
    state
        .reply(
            handle,
            request.run_async,
            "Ansible playbook execution failed",
            |out| RunResult {
                message: "Ansible playbook executed successfully".into(),
                job_id: out.job_id,
                output: include_output.then(|| out.stdout.clone()),
            },
        )
        .await
}

/// The job that runs `site.yml`, once the vault password, the inventory and
/// the vault file are there.
pub(crate) async fn playbook_spec(
    state: &AppState,
    workspace: &Workspace,
    version: PostgresqlVersion,
    request: Value,
) -> Result<JobSpec, ApiError> {
    let Some(password) = state.config.ansible_vault_password.clone() else {
        return Err(ApiError::bad_request(
            "ANSIBLE_VAULT_PASSWORD is not set in the server's environment",
        ));
    };
    if !workspace.ansible_dir().join("hosts.ini").is_file() {
        return Err(ApiError::bad_request(
            "there is no inventory yet: call /ansible/configure first",
        ));
    }
    if !state.config.ansible_vault_file.is_file() {
        return Err(ApiError::bad_request(format!(
            "the vault file {} does not exist: create it with `ansible-vault create` (it holds replication_password)",
            state.config.ansible_vault_file.display()
        )));
    }
    let spec = playbook_job(&state.config, workspace, password.clone(), version, request);
    learn_vault_secrets(state, &password).await;
    Ok(spec)
}

/// Teaches the runner the vault's values (the replication password), so a
/// task that prints one has it masked. Re-read only when the file changed.
async fn learn_vault_secrets(state: &AppState, password: &Secret) {
    let modified = std::fs::metadata(&state.config.ansible_vault_file)
        .and_then(|m| m.modified())
        .ok();
    if modified.is_none() || *state.vault_learned.lock().unwrap() == modified {
        return;
    }
    match vault_secrets(&state.config, password).await {
        Ok(secrets) => {
            state.runner.add_secrets(secrets);
            *state.vault_learned.lock().unwrap() = modified;
        }
        // The playbook will report the same problem with the vault.
        Err(err) => {
            tracing::warn!(error = %state.runner.redact(&err), "could not read the vault's values to mask them")
        }
    }
}

/// The body of `/ansible/vault`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultRequest {
    /// At least 12 characters, at most 1024 bytes (UTF-8), no control
    /// characters.
    #[schema(
        min_length = 12,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$",
        example = "choose-a-replication-password"
    )]
    replication_password: String,
}

/// `/ansible/vault`'s success.
#[derive(Debug, Serialize, ToSchema)]
pub struct VaultResult {
    pub message: String,
    /// The `ansible-vault encrypt` job.
    pub job_id: crate::store::JobId,
    /// The vault file written (`ANSIBLE_VAULT_FILE`).
    #[schema(value_type = String)]
    pub vault_file: std::path::PathBuf,
}

/// Sets the replication password: (re)writes the vault file encrypted with
/// `ANSIBLE_VAULT_PASSWORD`; both reach ansible-vault through pipes.
#[utoipa::path(
    post,
    path = "/ansible/vault",
    operation_id = "ansible_vault",
    tag = "ansible",
    summary = "Set the replication password in the vault",
    description = "Encrypts `replication_password` with `ANSIBLE_VAULT_PASSWORD` \
        (`ansible-vault encrypt`, both through pipes) and replaces `ANSIBLE_VAULT_FILE` \
        (mode 0600). The vault file is shared by every workspace.",
    request_body(content = VaultRequest),
    responses(
        (status = 200, description = "The vault file is written", body = VaultResult),
        (status = 400, description = "A bad password (`fields`), no `ANSIBLE_VAULT_PASSWORD`, \
            or ansible-vault failed (`job_id`, `status`, `details`)", body = ErrorBody),
        (status = 409, response = crate::openapi::Busy),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn set_vault(
    State(state): State<AppState>,
    started_by: StartedBy,
    ApiJson(request): ApiJson<VaultRequest>,
) -> Result<Json<VaultResult>, ApiError> {
    let password = request.replication_password;
    let problem = if password.chars().count() < 12 {
        Some("must be at least 12 characters long")
    } else if password.len() > 1024 {
        Some("must be at most 1024 bytes long")
    } else if password.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    };
    if let Some(reason) = problem {
        return Err(ApiError::field("replication_password", reason));
    }
    let Some(vault_password) = state.config.ansible_vault_password.clone() else {
        return Err(ApiError::bad_request(
            "ANSIBLE_VAULT_PASSWORD is not set in the server's environment",
        ));
    };
    let secret = Secret::new(password.as_str());
    // A JSON string is a valid YAML double-quoted scalar.
    let plaintext = Secret::new(format!(
        "replication_password: {}\n",
        serde_json::to_string(&password).map_err(ApiError::internal)?
    ));
    let vault_file = state.config.ansible_vault_file.clone();
    let dir = vault_file
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| ".".into());
    std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
    let tmp = dir.join(format!(".vault-{}.tmp", uuid::Uuid::new_v4()));
    let workspace = state.workspace(DEFAULT_WORKSPACE);
    let mut spec = vault_encrypt_job(
        &state.config,
        &workspace,
        vault_password,
        plaintext,
        &tmp,
        vec![secret.clone()],
    );
    started_by.stamp(&mut spec);
    let (target, written) = (vault_file.clone(), tmp.clone());
    spec.on_success = Some(Box::new(move |_| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&written, std::fs::Permissions::from_mode(0o600))
            .and_then(|_| std::fs::rename(&written, &target))
            .map_err(|e| format!("could not install the vault file: {e}"))?;
        Ok(None)
    }));
    spec.on_finish = Some(Box::new(move |_| {
        let _ = std::fs::remove_file(&tmp);
    }));
    let handle = state.submit(spec).await?;
    let output = handle.wait().await;
    if output.status != JobStatus::Succeeded {
        return Err(ApiError::ToolFailed {
            error: "ansible-vault failed".into(),
            details: details(&output),
            job_id: output.job_id,
            status: output.status,
        });
    }
    state.runner.add_secrets([secret]);
    Ok(Json(VaultResult {
        message: "Vault updated: replication_password set".into(),
        job_id: output.job_id,
        vault_file,
    }))
}
