use std::process::ExitCode;

use pgcluster_api::cli::{self, Command};
use pgcluster_api::config::Config;
use pgcluster_api::startup::Application;
use pgcluster_api::telemetry;

fn main() -> ExitCode {
    match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Serve) => serve(),
        Ok(command) => cli::run(command),
        Err(err) => {
            eprintln!("pgcluster-api: {err}\n\n{}", cli::USAGE);
            ExitCode::from(2)
        }
    }
}

fn serve() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

async fn run() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => {
            eprint!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let _logs = match telemetry::init(
        &config.log_dir,
        config.debug,
        config.log_format,
        config.log_rotation,
    ) {
        Ok(guards) => guards,
        Err(err) => {
            eprintln!(
                "LOG_DIR: cannot set up logging in {}: {err}",
                config.log_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(port = app.port(), "pgcluster-api listening");
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "server error");
            ExitCode::FAILURE
        }
    }
}
