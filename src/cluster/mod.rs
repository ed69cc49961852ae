//! The application layer: what the product does to a workspace and its
//! cluster. Each operation is a function taking the [`App`] (write the
//! tfvars, start a terraform command, configure, run the playbook, deploy,
//! read the cluster's state), so the routes, the deploy pipeline and a
//! scheduler can all call it. Nothing here knows HTTP: failures are
//! [`Error`]s, which the routes turn into answers.

pub mod backup;
mod configure;
pub mod deploy;
mod error;
pub mod guardrails;
pub mod ha;
pub mod notify;
mod playbook;
mod status;
mod terraform;
mod vault;
pub mod webhooks;
mod workspaces;

pub use configure::{ConfigureInput, ConfigureRequest, Configured, Inventory, configure};
pub use error::{Error, details};
pub use ha::{Primary, cluster_events, monitor_leaders, primary};
pub use playbook::{RunOptions as PlaybookOptions, run_playbook};
pub use status::{ClusterStatus, HostStatus, SlotStatus, cluster_status};
pub use terraform::{Generated, generate, plan_changes, start_command};
pub use vault::{VaultSet, set_vault};
pub use workspaces::{
    NewWorkspace, WorkspaceInfo, create_workspace, delete_workspace, describe, describe_all,
    list_workspaces, parse_expiry, update_workspace,
};

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::config::{Config, SECRET_ENV};
use crate::domain::StackCache;
use crate::render::Renderer;
use crate::runner::{JobHandle, JobSpec, Runner, RunnerConfig, SubmitError};
use crate::secret::Redactor;
use crate::store::{JobStore, MemoryStore, SqliteStore};
use crate::workspace::{Holder, LockGuard, Workspace, WorkspaceLocks};

/// What every operation works with. Cheap to clone.
#[derive(Clone)]
pub struct App {
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// Starts and supervises every tool run.
    pub runner: Runner,
    /// The templates of `TEMPLATE_DIR`.
    pub renderer: Arc<Renderer>,
    /// The stacks' variables, parsed once per change of their files.
    pub stacks: Arc<StackCache>,
    /// Modification time of the vault file whose values the runner masks.
    vault_learned: Arc<Mutex<Option<SystemTime>>>,
    /// The last Patroni view of each workspace.
    probes: Arc<ha::probe::Probes>,
    /// Held while a backup schedule is read and written back, so the
    /// scheduler and the schedule routes never overwrite each other.
    schedules: Arc<tokio::sync::Mutex<()>>,
    /// Held while a workspace's policy, a quota or an approval is read and
    /// written back (two approvals of one plan: one wins).
    pub(crate) guardrails: Arc<tokio::sync::Mutex<()>>,
    /// What happened, queued for the webhooks.
    pub notices: Arc<notify::Notices>,
}

/// Who starts an operation: the token's name and the request's id, recorded
/// on the jobs it starts.
#[derive(Clone, Debug, Default)]
pub struct Actor {
    pub name: Option<String>,
    pub request_id: Option<String>,
    /// Whether the caller holds the admin scope (guardrails only admins lift).
    pub admin: bool,
}

impl Actor {
    pub fn stamp(&self, spec: &mut JobSpec) {
        spec.started_by = self.name.clone();
        spec.request_id = self.request_id.clone();
    }
}

impl App {
    /// Checks the stack and templates, opens the job store and assembles the
    /// application.
    pub fn new(mut config: Config) -> Result<App, String> {
        // The tools run in other directories: make our paths absolute.
        for path in [
            &mut config.data_dir,
            &mut config.log_dir,
            &mut config.terraform_dir,
            &mut config.ansible_dir,
            &mut config.template_dir,
            &mut config.ansible_vault_file,
        ] {
            *path = std::path::absolute(&*path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("DATA_DIR: cannot create {}: {e}", config.data_dir.display()))?;
        std::fs::create_dir_all(&config.log_dir)
            .map_err(|e| format!("LOG_DIR: cannot create {}: {e}", config.log_dir.display()))?;
        let stacks = StackCache::default();
        stacks
            .get(&config.terraform_dir)
            .map_err(|e| format!("TERRAFORM_DIR: {e}"))?;
        let renderer =
            Renderer::load(&config.template_dir).map_err(|e| format!("TEMPLATE_DIR: {e}"))?;
        crate::metrics::handle();
        let store = open_store(&config)?;
        let runner = Runner::new(
            store,
            WorkspaceLocks::default(),
            RunnerConfig {
                timeout: config.job_timeout,
                idle_timeout: config.job_idle_timeout,
                cancel_grace: config.cancel_grace,
                max_line_bytes: config.max_line_bytes,
                max_log_bytes: config.max_log_bytes,
                secret_env: SECRET_ENV.iter().map(|s| s.to_string()).collect(),
            },
            Redactor::new(config.ansible_vault_password.clone()),
        );
        let notices = Arc::new(notify::Notices::default());
        webhooks::announce_job_ends(&runner, notices.clone());
        Ok(App {
            config: Arc::new(config),
            runner,
            renderer: Arc::new(renderer),
            stacks: Arc::new(stacks),
            vault_learned: Arc::default(),
            probes: Arc::default(),
            schedules: Arc::default(),
            guardrails: Arc::default(),
            notices,
        })
    }

    /// Queues a notice for the webhooks; never waits.
    pub fn notify(&self, event: notify::Event, workspace: &str, data: serde_json::Value) {
        self.notices
            .send(notify::Notice::new(event, workspace, data));
    }

    pub fn workspace(&self, name: &str) -> Workspace {
        Workspace::new(&self.config.data_dir, name)
    }

    /// Where the stacks live: the directory holding `TERRAFORM_DIR`.
    pub fn stacks_root(&self) -> std::path::PathBuf {
        self.config
            .terraform_dir
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| self.config.terraform_dir.clone())
    }

    /// The stack a workspace runs: its own (a directory next to
    /// `TERRAFORM_DIR`), or `TERRAFORM_DIR`.
    pub fn stack_dir(&self, workspace: &Workspace) -> std::path::PathBuf {
        match workspace.stack() {
            Some(stack) => self.stacks_root().join(stack),
            None => self.config.terraform_dir.clone(),
        }
    }

    /// Submits a job; a busy workspace is [`Error::Busy`], a disk that
    /// cannot take the job's record [`Error::Unavailable`].
    pub async fn submit(&self, spec: JobSpec) -> Result<JobHandle, Error> {
        self.check_storage()?;
        let cleanup = spec.kind == crate::store::JobKind::TerraformDestroy;
        if spec.kind.is_mutating() && !cleanup && spec.parent.is_none() {
            guardrails::expiry::check_usable(self, &self.workspace(&spec.workspace)).await?;
        }
        self.runner
            .submit(spec)
            .await
            .map_err(|err| self.refusal(err))
    }

    /// Refuses to start work while `DATA_DIR` has less free space than the
    /// server keeps (`MIN_FREE_BYTES`).
    pub fn check_storage(&self) -> Result<(), Error> {
        let dir = &self.config.data_dir;
        let Ok(space) = crate::disk::Space::of(dir) else {
            // Not measurable here: the writes themselves will tell.
            return Ok(());
        };
        let minimum = space.minimum(self.config.min_free_bytes);
        if space.free >= minimum {
            return Ok(());
        }
        Err(Error::Unavailable {
            message: format!(
                "no space left on device under DATA_DIR {}: {} free, below the {} the server \
                 keeps (MIN_FREE_BYTES); free space, then retry",
                dir.display(),
                crate::disk::human(space.free),
                crate::disk::human(minimum)
            ),
            fault: crate::disk::StorageFault::NoSpace,
        })
    }

    /// Why a job could not start: the workspace is busy, or the job store
    /// could not record it (a disk fault is named, with where the store is).
    pub fn refusal(&self, err: SubmitError) -> Error {
        match err {
            SubmitError::Store(err) => match err.storage_fault() {
                Some(fault) => Error::Unavailable {
                    message: format!(
                        "{} under {}: the job store cannot record a new job; nothing was \
                         started, retry once it can",
                        fault.describe(),
                        self.store_location()
                    ),
                    fault,
                },
                None => Error::internal(err),
            },
            busy => Error::from(busy),
        }
    }

    /// Where the job store keeps its records, as an operator looks for it.
    fn store_location(&self) -> String {
        match &self.config.database_url {
            Some(url) => format!("DATABASE_URL {url}"),
            None => format!("DATA_DIR {}", self.config.data_dir.display()),
        }
    }

    /// Holds the workspace while an operation rewrites its files.
    pub fn hold_for_files(&self, workspace: &Workspace) -> Result<LockGuard, Error> {
        self.runner
            .locks()
            .acquire(workspace.name(), Holder::FileUpdate)
            .map_err(|holder| Error::busy(workspace.name().to_string(), holder))
    }
}

/// The job store `DATABASE_URL` names: SQLite under `DATA_DIR` by default.
fn open_store(config: &Config) -> Result<Arc<dyn JobStore>, String> {
    match config.database_url.as_deref() {
        None => SqliteStore::open(&config.data_dir.join("jobs.db"))
            .map(|s| Arc::new(s) as Arc<dyn JobStore>)
            .map_err(|e| format!("DATA_DIR: {e}")),
        Some("memory:") => Ok(Arc::new(MemoryStore::default())),
        Some(url) => match url.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => SqliteStore::open(std::path::Path::new(path))
                .map(|s| Arc::new(s) as Arc<dyn JobStore>)
                .map_err(|e| format!("DATABASE_URL: {e}")),
            _ => Err(format!(
                "DATABASE_URL: {url:?} is not supported: use sqlite://PATH or memory:"
            )),
        },
    }
}

impl From<SubmitError> for Error {
    fn from(err: SubmitError) -> Error {
        match err {
            SubmitError::Busy { workspace, holder } => Error::busy(workspace, holder),
            SubmitError::Store(err) => Error::internal(err),
        }
    }
}
