//! Building the application: state, router, listener.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::domain::StackCache;
use crate::error::ApiError;
use crate::render::Renderer;
use crate::routes;
use crate::runner::{Redactor, Runner, RunnerConfig};
use crate::store::{JobStore, MemoryStore, SqliteStore};
use crate::workspace::WorkspaceLocks;

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// Starts and supervises every tool run.
    pub runner: Runner,
    /// The templates of `TEMPLATE_DIR`.
    pub renderer: Arc<Renderer>,
    /// The stacks' variables, parsed once per change of their files.
    pub stacks: Arc<StackCache>,
    /// Modification time of the vault file whose values the runner masks.
    pub vault_learned: Arc<std::sync::Mutex<Option<std::time::SystemTime>>>,
}

/// Environment variables that hold secrets: never passed to a child.
pub const SECRET_ENV: [&str; 2] = ["ANSIBLE_VAULT_PASSWORD", "API_TOKENS"];

impl AppState {
    /// Checks the stack and templates and assembles the state.
    pub fn new(mut config: Config) -> Result<AppState, String> {
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
                output_nice: config.output_nice,
            },
            Redactor::new(config.ansible_vault_password.clone()),
        );
        Ok(AppState {
            config: Arc::new(config),
            runner,
            renderer: Arc::new(renderer),
            stacks: Arc::new(stacks),
            vault_learned: Arc::default(),
        })
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

/// Every route with its OpenAPI operation: the router and the document at
/// `/openapi.json` are both built from this list.
pub fn api() -> OpenApiRouter<AppState> {
    // The run routes act on `default`, and on a named workspace under
    // `/workspaces/{name}`.
    let run_routes = || {
        routes::terraform::router()
            .merge(routes::ansible::router())
            .merge(routes::deploy::router())
            .merge(routes::cluster::router())
    };
    OpenApiRouter::with_openapi(crate::openapi::base())
        .merge(run_routes())
        .nest(crate::openapi::WORKSPACE_PREFIX, run_routes())
        .merge(routes::ansible::vault_router())
        .merge(routes::jobs::router())
        .merge(routes::health::router())
        .merge(routes::workspaces::router())
        .merge(routes::docs::router())
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let (routes, _document) = api().split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            crate::auth::Guard::new(&state.config),
            crate::auth::authenticate,
        ))
        .layer(middleware::from_fn(crate::metrics::track_http))
        .layer(middleware::from_fn_with_state(state.clone(), check_host))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn(crate::request_id::assign))
        .layer(cors(&state.config))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// CORS for the configured dashboard origins (none: no CORS headers).
fn cors(config: &Config) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = config
        .cors_allowed_origins
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("prefer"),
            HeaderName::from_static(crate::request_id::HEADER),
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static(crate::request_id::HEADER),
        ])
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(serde_json::json!({ "error": "method not allowed on this route" })),
    )
        .into_response()
}

/// `ALLOWED_HOSTS`: refuse requests addressed to another host name.
async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let allowed = &state.config.allowed_hosts;
    if !allowed.is_empty() {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| strip_port(h).to_ascii_lowercase());
        let ok = host
            .as_deref()
            .is_some_and(|h| allowed.iter().any(|a| a == "*" || a == h));
        if !ok {
            return ApiError::bad_request("the Host header is not in ALLOWED_HOSTS")
                .into_response();
        }
    }
    next.run(request).await
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Binds the listener (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<Application, String> {
        let address = (config.host, config.port);
        if config.api_tokens.is_empty() {
            tracing::warn!(
                "authentication is off: API_TOKENS is empty, so every request is served \
                 as 'anonymous' with the admin scope"
            );
        } else {
            tracing::info!(
                tokens = config.api_tokens.len(),
                "bearer-token authentication is on"
            );
        }
        let state = AppState::new(config)?;
        let interrupted = state.runner.recover().await.map_err(|e| e.to_string())?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "jobs left running by a previous server are now interrupted"
            );
        }
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen on {}:{}: {e}", address.0, address.1))?;
        Ok(Application {
            listener,
            router: router(state.clone()),
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until SIGINT or SIGTERM; then stops accepting, lets running
    /// jobs finish within `SHUTDOWN_GRACE_SECS` and cancels the rest.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop, mut stopping) = tokio::sync::watch::channel(false);
        let runner = self.state.runner.clone();
        let grace = self.state.config.shutdown_grace;
        // Jobs are wound down while the listener drains: open event streams
        // end when their jobs do.
        let jobs = tokio::spawn(async move {
            let _ = stopping.wait_for(|stopped| *stopped).await;
            runner.shutdown(grace).await;
        });
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            })
            .await;
        let _ = jobs.await;
        served
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
