//! Validated input: each type's constructor rejects what must not reach a
//! template or a command line.

mod host;
mod key_path;
mod pg_setting;
mod postgresql_version;
pub mod tfvars;
mod workspace_name;

pub use host::HostAddress;
pub use key_path::KeyPath;
pub use pg_setting::{PgSettingName, PgSettingValue};
pub use postgresql_version::PostgresqlVersion;
pub use tfvars::{StackCache, StackVariables, TfType, VariableSpec};
pub use workspace_name::WorkspaceName;

use serde::Deserialize;
use utoipa::ToSchema;

/// Options the terraform run endpoints take.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"output": true, "async": false}))]
pub struct RunOptions {
    /// Return the tool's standard output in the answer.
    #[serde(default)]
    pub output: bool,
    /// Answer `202` at once with the job instead of waiting for its end.
    #[serde(default, rename = "async")]
    pub run_async: bool,
    /// Refused with a clear reason: only destroy takes a confirmation
    /// (`DestroyOptions`).
    #[serde(default)]
    #[schema(ignore)]
    pub confirm: Option<String>,
}

/// The body of `destroy`: the run options and the confirmation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"confirm": "default"}))]
pub struct DestroyOptions {
    /// Return terraform's standard output in the answer.
    #[serde(default)]
    pub output: bool,
    /// Answer `202` at once with the job instead of waiting for its end.
    #[serde(default, rename = "async")]
    pub run_async: bool,
    /// The workspace's name, typed out (`default` on the original routes).
    /// Read as optional so that its absence is answered with the reason.
    #[serde(default)]
    #[schema(required = true, nullable = false)]
    pub confirm: Option<String>,
}

impl From<DestroyOptions> for RunOptions {
    fn from(options: DestroyOptions) -> RunOptions {
        RunOptions {
            output: options.output,
            run_async: options.run_async,
            confirm: options.confirm,
        }
    }
}
