//! `/ansible/configure` (inventory and settings from terraform's outputs) and
//! `/ansible/run` (the playbook).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PreferAsync, RunReply, RunResult, WorkspaceParam, reply};
use crate::auth::Access;
use crate::cluster::{
    self, Actor, App, ConfigureInput, ConfigureRequest, Inventory, PlaybookOptions,
};
use crate::domain::PostgresqlVersion;
use crate::error::{ApiError, ApiJson, ErrorBody, OptionalJson};
use crate::tokens::Scope;

/// `configure` and `run` act on `default`; `routes::api()` nests the same
/// under `/workspaces/{name}`.
pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(Access::Needs(Scope::Plan).declare(routes!(configure)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(run)))
}

/// `/ansible/vault`: one vault file for every workspace.
pub fn vault_router() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(Access::Needs(Scope::Admin).declare(routes!(set_vault)))
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
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
    OptionalJson(body): OptionalJson<Option<ConfigureRequest>>,
) -> Result<Json<ConfigureResult>, ApiError> {
    let Some(body) = body else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object with bastion_key_path, db_key_path and PostgreSQL settings",
        ));
    };
    let input = ConfigureInput::parse(&body)?;
    let configured = cluster::configure(&app, &workspace, &input, &actor).await?;
    Ok(Json(ConfigureResult {
        message: "Ansible configuration completed successfully".into(),
        job_id: configured.job_id,
        inventory: configured.inventory,
        settings: input.settings,
    }))
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
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
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
    let record = json!({
        "output": request.output,
        "async": request.run_async,
        "postgresql_version": version.get(),
    });
    let options = PlaybookOptions {
        version,
        capture_stdout: request.output && !request.run_async,
    };
    let handle = cluster::run_playbook(&app, &workspace, options, record, &actor).await?;
    let include_output = request.output;
    reply(
        &app,
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
        (mode 0600). The vault file is shared by every workspace. It also holds the backup \
        repository's passphrase (`pgbackrest_cipher_pass`): random the first time, kept when \
        the vault is written again.",
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
    State(app): State<App>,
    actor: Actor,
    ApiJson(request): ApiJson<VaultRequest>,
) -> Result<Json<VaultResult>, ApiError> {
    let set = cluster::set_vault(&app, &request.replication_password, &actor).await?;
    Ok(Json(VaultResult {
        message: "Vault updated: replication_password set".into(),
        job_id: set.job_id,
        vault_file: set.vault_file,
    }))
}
