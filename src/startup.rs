//! Building the server: the application, the router with its layers, the
//! listener, and the graceful stop.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::auth::{AccessTable, Guard};
use crate::cluster::App;
use crate::config::Config;
use crate::error::ApiError;
use crate::routes;

/// The whole HTTP surface.
pub fn router(state: App) -> Router {
    let (routes, document) = routes::api().split_for_parts();
    let guard = Guard::new(&state.config, AccessTable::of_document(&document));
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            guard,
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
        .allow_methods([
            Method::GET,
            Method::PUT,
            Method::PATCH,
            Method::POST,
            Method::DELETE,
        ])
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
async fn check_host(State(state): State<App>, request: Request, next: Next) -> Response {
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
    state: App,
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
        let state = App::new(config)?;
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
        // Leader changes become events while the server serves.
        let monitor =
            self.state.config.cluster_monitor.map(|every| {
                tokio::spawn(crate::cluster::monitor_leaders(self.state.clone(), every))
            });
        // Backups start as their schedules say, until the stop.
        let scheduler = self.state.config.backup_scheduler.map(|every| {
            tokio::spawn(crate::cluster::backup::run_schedules(
                self.state.clone(),
                every,
                stopping.clone(),
            ))
        });
        // Temporary workspaces are destroyed at expiry, until the stop.
        let expiry = self.state.config.expiry_scheduler.map(|every| {
            tokio::spawn(crate::cluster::guardrails::expiry::run_expiry(
                self.state.clone(),
                every,
                stopping.clone(),
            ))
        });
        // Webhooks are delivered until the jobs have ended, their ends included.
        let (stop_webhooks, webhooks_stopping) = tokio::sync::watch::channel(false);
        let webhooks = tokio::spawn(crate::cluster::webhooks::dispatch(
            self.state.clone(),
            webhooks_stopping,
        ));
        // Jobs are wound down while the listener drains: open event streams
        // end when their jobs do. The scheduler ends its tick first, so a
        // backup it starts is recorded on its schedule.
        let jobs = tokio::spawn(async move {
            let _ = stopping.wait_for(|stopped| *stopped).await;
            for task in [scheduler, expiry].into_iter().flatten() {
                let _ = task.await;
            }
            runner.shutdown(grace).await;
            let _ = stop_webhooks.send(true);
            let _ = webhooks.await;
        });
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            })
            .await;
        if let Some(monitor) = monitor {
            monitor.abort();
        }
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
