//! Logging: the console and `logs/app.log` for the server, `logs/terraform.log`
//! and `logs/ansible.log` for the tools' output, each line with its job id.

use std::path::Path;

use tracing::Level;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Keeps the log writers flushing; hold it for the life of the process.
pub struct LogGuards(#[allow(dead_code)] Vec<WorkerGuard>);

/// Installs the global subscriber.
pub fn init(log_dir: &Path, debug: bool) -> std::io::Result<LogGuards> {
    std::fs::create_dir_all(log_dir)?;
    let level = if debug { Level::DEBUG } else { Level::INFO };
    // Tool output goes to its own files; on the console only when debugging.
    let server = Targets::new()
        .with_default(level)
        .with_target(
            "terraform_output",
            if debug {
                LevelFilter::DEBUG
            } else {
                LevelFilter::OFF
            },
        )
        .with_target(
            "ansible_output",
            if debug {
                LevelFilter::DEBUG
            } else {
                LevelFilter::OFF
            },
        );
    let mut guards = Vec::new();
    let mut file = |name: &str| {
        let (writer, guard) =
            tracing_appender::non_blocking(tracing_appender::rolling::never(log_dir, name));
        guards.push(guard);
        writer
    };
    let app_log = file("app.log");
    let terraform_log = file("terraform.log");
    let ansible_log = file("ansible.log");
    tracing_subscriber::registry()
        .with(fmt::layer().with_filter(server.clone()))
        .with(
            fmt::layer()
                .with_ansi(false)
                .with_writer(app_log)
                .with_filter(server),
        )
        .with(
            fmt::layer()
                .with_ansi(false)
                .with_target(false)
                .with_writer(terraform_log)
                .with_filter(Targets::new().with_target("terraform_output", Level::TRACE)),
        )
        .with(
            fmt::layer()
                .with_ansi(false)
                .with_target(false)
                .with_writer(ansible_log)
                .with_filter(Targets::new().with_target("ansible_output", Level::TRACE)),
        )
        .try_init()
        .map_err(std::io::Error::other)?;
    Ok(LogGuards(guards))
}
