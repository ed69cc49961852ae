//! `/openapi.json` (the API's OpenAPI 3.1 document) and `/docs` (Swagger UI
//! showing it). Swagger UI's files are built into the binary
//! (`utoipa-swagger-ui`'s vendored copy), so the page works without network.

use std::sync::{Arc, OnceLock};

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::Config;

use crate::auth::Access;
use crate::cluster::App;
use crate::error::{ApiError, ApiPath, ErrorBody};

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(Access::Open.declare(routes!(openapi_json)))
        .routes(Access::Open.declare(routes!(docs)))
        .routes(Access::Open.declare(routes!(docs_index)))
        .routes(Access::Open.declare(routes!(docs_file)))
}

/// Where the document is served; Swagger UI loads it from there.
const DOCUMENT_PATH: &str = "/openapi.json";

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    summary = "This OpenAPI 3.1 document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json",
            body = Object),
    )
)]
async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi_json(),
    )
        .into_response()
}

/// Swagger UI loads its files relative to the page: `/docs/`.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    summary = "Swagger UI (redirects to /docs/)",
    responses(
        (status = 308, description = "To `/docs/`",
            headers(("Location" = String, description = "`/docs/`"))),
    )
)]
async fn docs() -> Redirect {
    Redirect::permanent("/docs/")
}

/// The page.
#[utoipa::path(
    get,
    path = "/docs/",
    tag = "docs",
    summary = "Swagger UI showing this document",
    responses(
        (status = 200, description = "Swagger UI's page", content_type = "text/html", body = String),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn docs_index() -> Result<Response, ApiError> {
    swagger_file("index.html")
}

/// The page's scripts, styles and icons.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "docs",
    summary = "Swagger UI's files",
    params(("file" = String, Path, description = "A file of Swagger UI", example = "swagger-ui.css")),
    responses(
        (status = 200, description = "The file",
            content(
                ("text/javascript"),
                ("text/css"),
                ("text/html"),
                ("image/png"),
            )),
        (status = 400, description = "Not a file name", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn docs_file(ApiPath(file): ApiPath<String>) -> Result<Response, ApiError> {
    swagger_file(&file)
}

fn swagger_file(file: &str) -> Result<Response, ApiError> {
    static CONFIG: OnceLock<Arc<Config<'static>>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| Arc::new(Config::new([DOCUMENT_PATH])));
    let found = utoipa_swagger_ui::serve(file, config.clone())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(found) = found else {
        return Err(ApiError::NotFound(format!("no file {file} in /docs")));
    };
    Ok((
        [
            (header::CONTENT_TYPE, found.content_type),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        found.bytes.into_owned(),
    )
        .into_response())
}
