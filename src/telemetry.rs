//! Logging: the console and `logs/app.log` for the server, `logs/terraform.log`
//! and `logs/ansible.log` for the tools' output, each line with its job id.
//! `LOG_FORMAT=json` writes one JSON object a line; files rotate per
//! `LOG_ROTATION` (`app.log.2026-11-23`, ...).

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
pub struct LogGuards(#[allow(dead_code)] Vec<WorkerGuard>);

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
    // Tool output goes to its own files; on the console only when debugging.
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
    let layer = |writer: Option<NonBlocking>, tool_file: bool| -> BoxedLayer {
        let base = fmt::layer().with_target(!tool_file);
        match (format, writer) {
            (LogFormat::Json, Some(w)) => base.json().with_writer(w).boxed(),
            (LogFormat::Json, None) => base.json().boxed(),
            (LogFormat::Text, Some(w)) => base.with_ansi(false).with_writer(w).boxed(),
            (LogFormat::Text, None) => base.boxed(),
        }
    };
    let layers = vec![
        layer(None, false).with_filter(server.clone()).boxed(),
        layer(Some(file("app.log")), false)
            .with_filter(server)
            .boxed(),
        layer(Some(file("terraform.log")), true)
            .with_filter(Targets::new().with_target("terraform_output", Level::TRACE))
            .boxed(),
        layer(Some(file("ansible.log")), true)
            .with_filter(Targets::new().with_target("ansible_output", Level::TRACE))
            .boxed(),
    ];
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(std::io::Error::other)?;
    Ok(LogGuards(guards))
}
