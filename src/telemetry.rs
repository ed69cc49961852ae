//! Logging: the console and `logs/app.log` for the server, `logs/terraform.log`
//! and `logs/ansible.log` for the tools' output, each line with its job id.
//! `LOG_FORMAT=json` writes one JSON object a line; files rotate per
//! `LOG_ROTATION` (`app.log.2026-11-23`, ...). The tool logs are written by
//! `tool_log`, a batch of lines at a time, in the same format.

mod tool_log;

pub use tool_log::{ToolFile, ToolLogBatch};

use std::path::Path;

use tracing::Level;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, fmt};

use crate::config::{LogFormat, LogRotation};

/// Keeps the log writers flushing; hold it for the life of the process.
pub struct LogGuards(
    #[allow(dead_code)] Vec<WorkerGuard>,
    #[allow(dead_code)] tool_log::ToolLogGuard,
);

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber.
pub fn init(
    log_dir: &Path,
    debug: bool,
    format: LogFormat,
    rotation: LogRotation,
) -> std::io::Result<LogGuards> {
    std::fs::create_dir_all(log_dir)?;
    let level = if debug { Level::DEBUG } else { Level::INFO };
    // Tool output goes to its own files (`tool_log`); on the console (and in
    // app.log) only when debugging.
    let tool_level = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::OFF
    };
    let server = Targets::new()
        .with_default(level)
        .with_target("terraform_output", tool_level)
        .with_target("ansible_output", tool_level);
    let mut guards = Vec::new();
    let mut file = |name: &str| -> NonBlocking {
        let appender = match rotation {
            LogRotation::Never => rolling::never(log_dir, name),
            LogRotation::Daily => rolling::daily(log_dir, name),
            LogRotation::Hourly => rolling::hourly(log_dir, name),
        };
        // A bounded queue: a slow disk drops log lines rather than growing memory.
        let (writer, guard) = NonBlockingBuilder::default()
            .buffered_lines_limit(16_384)
            .finish(appender);
        guards.push(guard);
        writer
    };
    let layer = |writer: Option<NonBlocking>| -> BoxedLayer {
        let base = fmt::layer();
        match (format, writer) {
            (LogFormat::Json, Some(w)) => base.json().with_writer(w).boxed(),
            (LogFormat::Json, None) => base.json().boxed(),
            (LogFormat::Text, Some(w)) => base.with_ansi(false).with_writer(w).boxed(),
            (LogFormat::Text, None) => base.boxed(),
        }
    };
    let layers = vec![
        layer(None).with_filter(server.clone()).boxed(),
        layer(Some(file("app.log"))).with_filter(server).boxed(),
    ];
    let tool_logs = tool_log::install(log_dir, format, rotation)?;
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(std::io::Error::other)?;
    Ok(LogGuards(guards, tool_logs))
}
