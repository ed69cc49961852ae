//! Server configuration: read once at start-up from `.env` and the environment.
//!
//! Every key is documented in `.env.example`. A bad value stops start-up with one
//! line per problem, naming the key.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;
use crate::tokens::Tokens;

/// Environment variables that hold secrets: never passed to a child.
pub const SECRET_ENV: [&str; 2] = ["ANSIBLE_VAULT_PASSWORD", "API_TOKENS"];

/// Everything the server needs to know about its surroundings.
#[derive(Clone)]
pub struct Config {
    /// Address the HTTP listener binds (`HOST_ADDRESS`).
    pub host: IpAddr,
    /// TCP port of the listener; 0 picks a free one (`API_PORT`).
    pub port: u16,
    /// Accepted `Host` header names; empty accepts any (`ALLOWED_HOSTS`).
    pub allowed_hosts: Vec<String>,
    /// Debug-level logging (`DEBUG`).
    pub debug: bool,
    /// `terraform` or `tofu` executable (`TERRAFORM_BINARY`).
    pub terraform_binary: PathBuf,
    /// `ansible-playbook` executable (`ANSIBLE_PLAYBOOK_BINARY`).
    pub ansible_playbook_binary: PathBuf,
    /// `ssh` executable that reaches the cluster's private network through
    /// the bastion, for the Patroni probe (`SSH_BINARY`).
    pub ssh_binary: PathBuf,
    /// How often the cluster monitor reads each configured workspace's
    /// leader; `None` = no monitor (`CLUSTER_MONITOR_SECONDS`, 0 disables).
    pub cluster_monitor: Option<Duration>,
    /// How often the backup scheduler looks for due backups; `None` = no
    /// scheduled backups (`BACKUP_SCHEDULER_SECONDS`, 0 disables).
    pub backup_scheduler: Option<Duration>,
    /// The Terraform stack the workspaces run (`TERRAFORM_DIR`).
    pub terraform_dir: PathBuf,
    /// Directory holding `site.yml` and its roles (`ANSIBLE_DIR`).
    pub ansible_dir: PathBuf,
    /// Directory of the minijinja templates (`TEMPLATE_DIR`).
    pub template_dir: PathBuf,
    /// Workspaces and job records live here (`DATA_DIR`).
    pub data_dir: PathBuf,
    /// `app.log`, `terraform.log`, `ansible.log` (`LOG_DIR`).
    pub log_dir: PathBuf,
    /// Vault-encrypted vars file holding `replication_password` (`ANSIBLE_VAULT_FILE`).
    pub ansible_vault_file: PathBuf,
    /// Password of the vault; piped to ansible, never written (`ANSIBLE_VAULT_PASSWORD`).
    pub ansible_vault_password: Option<Secret>,
    /// What `"output"` of `/terraform/output` holds: `text` or `json` (`OUTPUT_FORMAT`).
    pub output_format: OutputFormat,
    /// Longest a job may run before it is stopped (`JOB_TIMEOUT_SECS`).
    pub job_timeout: Duration,
    /// Longest a job may stay silent before it is stopped; `None` = no limit
    /// (`JOB_IDLE_TIMEOUT_SECS`, 0 disables).
    pub job_idle_timeout: Option<Duration>,
    /// Time between SIGINT and SIGKILL when a job is stopped (`CANCEL_GRACE_SECS`).
    pub cancel_grace: Duration,
    /// Lines longer than this are cut with a marker (`JOB_LOG_MAX_LINE_BYTES`).
    pub max_line_bytes: usize,
    /// A job's stored log stops, with a marker, past this size (`JOB_LOG_MAX_BYTES`).
    pub max_log_bytes: usize,
    /// Largest request body accepted (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Free bytes `DATA_DIR` and `LOG_DIR` keep: below it `/ready` fails and
    /// runs are refused (`MIN_FREE_BYTES`; default the smaller of 1% of the
    /// filesystem and 256 MiB).
    pub min_free_bytes: Option<u64>,
    /// Where job records and logs are kept (`DATABASE_URL`); default
    /// `sqlite://<DATA_DIR>/jobs.db`, `memory:` keeps them in memory only.
    pub database_url: Option<String>,
    /// On SIGTERM, how long running jobs may go on before they are cancelled
    /// (`SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// Bearer tokens (hashes) and their scopes; empty turns authentication
    /// off (`API_TOKENS`).
    pub api_tokens: Tokens,
    /// Serve without tokens on a non-loopback address (`ALLOW_UNAUTHENTICATED`).
    pub allow_unauthenticated: bool,
    /// `/metrics` needs a `read` token (`METRICS_REQUIRE_TOKEN`).
    pub metrics_require_token: bool,
    /// Browser origins (dashboards) allowed by CORS (`CORS_ALLOWED_ORIGINS`).
    pub cors_allowed_origins: Vec<String>,
    /// `text` or `json` log lines (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// When log files start anew: `never`, `daily` or `hourly` (`LOG_ROTATION`).
    pub log_rotation: LogRotation,
    /// Whether plans of the `default` workspace await approval before they
    /// are applied (`DEFAULT_APPROVAL_REQUIRED`).
    pub default_approval_required: bool,
    /// How often expiring workspaces are looked at; `None` = never expire
    /// them (`EXPIRY_SCHEDULER_SECONDS`, 0 disables).
    pub expiry_scheduler: Option<Duration>,
    /// The most hours one `extend` may add (`WORKSPACE_MAX_EXTEND_HOURS`).
    pub max_extend_hours: u64,
    /// How long before expiry `workspace.expiring` is sent
    /// (`WORKSPACE_EXPIRY_WARNING_SECONDS`).
    pub expiry_warning: Duration,
    /// How long a webhook receiver has to answer (`WEBHOOK_TIMEOUT_SECONDS`).
    pub webhook_timeout: Duration,
    /// The wait before the first retry of a failed delivery, doubled for
    /// each next one (`WEBHOOK_RETRY_SECONDS`).
    pub webhook_retry: Duration,
    /// Tries of a delivery before it is given up (`WEBHOOK_MAX_ATTEMPTS`, at
    /// least 3).
    pub webhook_max_attempts: u32,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// When the log files rotate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogRotation {
    Never,
    Daily,
    Hourly,
}

/// Format of the `"output"` text of `/terraform/output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

/// All the problems found in the configuration, one per line.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.0 {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("terraform_dir", &self.terraform_dir)
            .field("ansible_dir", &self.ansible_dir)
            .field("data_dir", &self.data_dir)
            .field("vault_password_set", &self.ansible_vault_password.is_some())
            .field("api_tokens", &self.api_tokens)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads `.env` (when present) into the environment, then the configuration.
    pub fn load() -> Result<Config, ConfigError> {
        // A missing .env is normal; a malformed one is a configuration error.
        if let Err(err) = dotenvy::dotenv()
            && !err.not_found()
        {
            return Err(ConfigError(vec![format!(".env: {err}")]));
        }
        Config::from_vars(std::env::vars().collect())
    }

    /// Builds the configuration from a set of variables (the environment in production).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Config, ConfigError> {
        let mut r = Reader {
            vars,
            problems: Vec::new(),
        };
        let config = Config {
            host: r
                .parse::<IpAddrOr>("HOST_ADDRESS", "127.0.0.1", "an IP address")
                .0,
            port: r.parse("API_PORT", "5000", "a port number (0-65535)"),
            allowed_hosts: r
                .string("ALLOWED_HOSTS", "")
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            debug: r.boolean("DEBUG", false),
            terraform_binary: r.string("TERRAFORM_BINARY", "terraform").into(),
            ansible_playbook_binary: r
                .string("ANSIBLE_PLAYBOOK_BINARY", "ansible-playbook")
                .into(),
            ssh_binary: r.string("SSH_BINARY", "ssh").into(),
            cluster_monitor: match r.parse::<u64>(
                "CLUSTER_MONITOR_SECONDS",
                "5",
                "a number of seconds",
            ) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            backup_scheduler: match r.parse::<u64>(
                "BACKUP_SCHEDULER_SECONDS",
                "15",
                "a number of seconds",
            ) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            terraform_dir: r.directory("TERRAFORM_DIR", "terraform/aws", true),
            ansible_dir: r.directory("ANSIBLE_DIR", "ansible", true),
            template_dir: r.directory("TEMPLATE_DIR", "templates", true),
            data_dir: r.directory("DATA_DIR", "data", false),
            log_dir: r.directory("LOG_DIR", "logs", false),
            ansible_vault_file: r.string("ANSIBLE_VAULT_FILE", "ansible/vault.yml").into(),
            ansible_vault_password: r
                .vars
                .get("ANSIBLE_VAULT_PASSWORD")
                .filter(|v| !v.is_empty())
                .map(|v| Secret::new(v.clone())),
            output_format: match r
                .string("OUTPUT_FORMAT", "text")
                .to_ascii_lowercase()
                .as_str()
            {
                "text" => OutputFormat::Text,
                "json" => OutputFormat::Json,
                other => {
                    r.problems.push(format!(
                        "OUTPUT_FORMAT: must be text or json, got {other:?}"
                    ));
                    OutputFormat::Text
                }
            },
            job_timeout: Duration::from_secs(r.positive("JOB_TIMEOUT_SECS", "3600")),
            job_idle_timeout: match r.parse::<u64>(
                "JOB_IDLE_TIMEOUT_SECS",
                "0",
                "a number of seconds",
            ) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            cancel_grace: Duration::from_secs(r.parse(
                "CANCEL_GRACE_SECS",
                "30",
                "a number of seconds",
            )),
            max_line_bytes: r.positive("JOB_LOG_MAX_LINE_BYTES", "16384") as usize,
            max_log_bytes: r.positive("JOB_LOG_MAX_BYTES", "67108864") as usize,
            max_body_bytes: r.positive("MAX_BODY_BYTES", "65536") as usize,
            min_free_bytes: match r.string("MIN_FREE_BYTES", "").as_str() {
                "" => None,
                _ => Some(r.parse("MIN_FREE_BYTES", "", "a number of bytes")),
            },
            database_url: r
                .vars
                .get("DATABASE_URL")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            shutdown_grace: Duration::from_secs(r.parse(
                "SHUTDOWN_GRACE_SECS",
                "60",
                "a number of seconds",
            )),
            api_tokens: Tokens::parse(&r.string("API_TOKENS", "")).unwrap_or_else(|problems| {
                r.problems.extend(problems);
                Tokens::default()
            }),
            allow_unauthenticated: r.boolean("ALLOW_UNAUTHENTICATED", false),
            metrics_require_token: r.boolean("METRICS_REQUIRE_TOKEN", false),
            cors_allowed_origins: r
                .string("CORS_ALLOWED_ORIGINS", "")
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            log_format: match r.string("LOG_FORMAT", "text").to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    r.problems
                        .push(format!("LOG_FORMAT: must be text or json, got {other:?}"));
                    LogFormat::Text
                }
            },
            log_rotation: match r
                .string("LOG_ROTATION", "daily")
                .to_ascii_lowercase()
                .as_str()
            {
                "never" => LogRotation::Never,
                "daily" => LogRotation::Daily,
                "hourly" => LogRotation::Hourly,
                other => {
                    r.problems.push(format!(
                        "LOG_ROTATION: must be never, daily or hourly, got {other:?}"
                    ));
                    LogRotation::Daily
                }
            },
            default_approval_required: r.boolean("DEFAULT_APPROVAL_REQUIRED", false),
            expiry_scheduler: match r.parse::<u64>(
                "EXPIRY_SCHEDULER_SECONDS",
                "15",
                "a number of seconds",
            ) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            max_extend_hours: r.positive("WORKSPACE_MAX_EXTEND_HOURS", "168"),
            expiry_warning: Duration::from_secs(r.parse(
                "WORKSPACE_EXPIRY_WARNING_SECONDS",
                "3600",
                "a number of seconds",
            )),
            webhook_timeout: Duration::from_secs(r.positive("WEBHOOK_TIMEOUT_SECONDS", "10")),
            webhook_retry: Duration::from_secs(r.positive("WEBHOOK_RETRY_SECONDS", "5")),
            webhook_max_attempts: r.positive("WEBHOOK_MAX_ATTEMPTS", "5").max(3) as u32,
        };
        for origin in &config.cors_allowed_origins {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && origin.parse::<axum::http::HeaderValue>().is_ok();
            if !valid {
                r.problems.push(format!(
                    "CORS_ALLOWED_ORIGINS: {origin:?} is not an origin like https://dashboard.example"
                ));
            }
        }
        // An open API on a reachable address must be a decision, not a default.
        if config.api_tokens.is_empty()
            && !r.problems.iter().any(|p| p.starts_with("API_TOKENS"))
            && !config.host.is_loopback()
            && !config.allow_unauthenticated
        {
            r.problems.push(format!(
                "HOST_ADDRESS: {} is not a loopback address and API_TOKENS is empty; \
                 add a token (pgcluster-api token create) or set ALLOW_UNAUTHENTICATED=true",
                config.host
            ));
        }
        if r.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(r.problems))
        }
    }
}

/// `IpAddr` with a default, for `Reader::parse`.
struct IpAddrOr(IpAddr);

impl Default for IpAddrOr {
    fn default() -> Self {
        IpAddrOr(IpAddr::from([127, 0, 0, 1]))
    }
}

impl std::str::FromStr for IpAddrOr {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(IpAddrOr)
    }
}

/// Reads keys with defaults and collects every problem instead of stopping at the first.
struct Reader {
    vars: HashMap<String, String>,
    problems: Vec<String>,
}

impl Reader {
    fn string(&self, key: &str, default: &str) -> String {
        match self.vars.get(key) {
            Some(v) if !v.trim().is_empty() => v.trim().to_string(),
            _ => default.to_string(),
        }
    }

    fn parse<T: std::str::FromStr + Default>(&mut self, key: &str, default: &str, what: &str) -> T {
        let raw = self.string(key, default);
        raw.parse().unwrap_or_else(|_| {
            self.problems
                .push(format!("{key}: must be {what}, got {raw:?}"));
            T::default()
        })
    }

    fn positive(&mut self, key: &str, default: &str) -> u64 {
        let value: u64 = self.parse(key, default, "a positive number");
        if value == 0 && !self.problems.iter().any(|p| p.starts_with(key)) {
            self.problems.push(format!("{key}: must be greater than 0"));
        }
        value
    }

    fn boolean(&mut self, key: &str, default: bool) -> bool {
        let raw = self.string(key, if default { "true" } else { "false" });
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => {
                self.problems
                    .push(format!("{key}: must be true or false, got {raw:?}"));
                default
            }
        }
    }

    /// A directory path; `must_exist` directories are inputs the server cannot create.
    fn directory(&mut self, key: &str, default: &str, must_exist: bool) -> PathBuf {
        let path = PathBuf::from(self.string(key, default));
        if must_exist && !path.is_dir() {
            self.problems
                .push(format!("{key}: {} is not a directory", path.display()));
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let here = env!("CARGO_MANIFEST_DIR");
        map.entry("TERRAFORM_DIR".into())
            .or_insert(format!("{here}/templates"));
        map.entry("ANSIBLE_DIR".into())
            .or_insert(format!("{here}/templates"));
        map.entry("TEMPLATE_DIR".into())
            .or_insert(format!("{here}/templates"));
        map
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(config.port, 5000);
        assert!(!config.debug);
        assert!(config.ansible_vault_password.is_none());
    }

    #[test]
    fn every_bad_key_is_named() {
        let err = Config::from_vars(vars(&[
            ("API_PORT", "http"),
            ("DEBUG", "maybe"),
            ("JOB_TIMEOUT_SECS", "0"),
            ("TERRAFORM_DIR", "/nonexistent/stack"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for key in ["API_PORT", "DEBUG", "JOB_TIMEOUT_SECS", "TERRAFORM_DIR"] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn the_backup_scheduler_ticks_every_15_seconds_unless_set_and_0_turns_it_off() {
        let every = |value: &str| {
            Config::from_vars(vars(&[("BACKUP_SCHEDULER_SECONDS", value)]))
                .unwrap()
                .backup_scheduler
        };
        assert_eq!(every(""), Some(Duration::from_secs(15)));
        assert_eq!(every("1"), Some(Duration::from_secs(1)));
        assert_eq!(every("0"), None);
        let err = Config::from_vars(vars(&[("BACKUP_SCHEDULER_SECONDS", "soon")])).unwrap_err();
        assert!(
            err.to_string().contains("BACKUP_SCHEDULER_SECONDS"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_vault_password_counts_as_unset() {
        let config = Config::from_vars(vars(&[("ANSIBLE_VAULT_PASSWORD", "")])).unwrap();
        assert!(config.ansible_vault_password.is_none());
    }

    #[test]
    fn a_non_loopback_address_without_tokens_needs_allow_unauthenticated() {
        let err = Config::from_vars(vars(&[("HOST_ADDRESS", "0.0.0.0")])).unwrap_err();
        assert!(err.to_string().contains("ALLOW_UNAUTHENTICATED"), "{err}");
        for extra in [
            ("ALLOW_UNAUTHENTICATED", "true".to_string()),
            ("API_TOKENS", format!("ci:read:sha256:{}", "a".repeat(64))),
        ] {
            let config =
                Config::from_vars(vars(&[("HOST_ADDRESS", "0.0.0.0"), (extra.0, &extra.1)]));
            assert!(config.is_ok(), "{extra:?}: {config:?}");
        }
        assert!(Config::from_vars(vars(&[("HOST_ADDRESS", "::1")])).is_ok());
    }

    #[test]
    fn a_bad_token_entry_stops_start_up_naming_api_tokens() {
        let err = Config::from_vars(vars(&[("API_TOKENS", "ci:read:sha256:00")])).unwrap_err();
        assert!(
            err.to_string().contains("API_TOKENS: entry 1 (ci)"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_shows_token_names_but_no_hashes() {
        let hash = "ab".repeat(32);
        let config =
            Config::from_vars(vars(&[("API_TOKENS", &format!("ci:apply:sha256:{hash}"))])).unwrap();
        let text = format!("{config:?}");
        assert!(text.contains("ci:apply"), "{text}");
        assert!(!text.contains("abab"), "{text}");
    }
}
