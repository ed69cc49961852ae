//! The one error type the API answers with, and the JSON extractor whose
//! rejections use the same shape.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::store::{JobId, JobStatus};

/// What a request can end in besides success.
#[derive(thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is not acceptable.
    /// `fields` maps each offending field to the reason.
    #[error("{message}")]
    Validation {
        message: String,
        fields: Map<String, Value>,
    },
    /// 400: generate was sent names the stack does not declare, or lacks required ones.
    #[error("invalid terraform variables")]
    Variables {
        unknown: Vec<String>,
        missing: Vec<String>,
        invalid: Map<String, Value>,
    },
    /// 400: the tool ran and failed (the original API's shape), with its output tail.
    #[error("{error}")]
    ToolFailed {
        error: String,
        details: String,
        job_id: JobId,
        status: JobStatus,
    },
    /// 409: the workspace is busy with another job.
    #[error("workspace {workspace} is busy with job {job_id}")]
    Busy { workspace: String, job_id: JobId },
    /// 409: the request needs something done first (e.g. apply without a saved plan).
    #[error("{0}")]
    Conflict(String),
    /// 401: no bearer token, or one that is not configured. Answered with
    /// `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token is valid but its scope is below the route's.
    #[error("{message}")]
    Forbidden {
        message: String,
        required: crate::tokens::Scope,
    },
    /// 409: the saved plan waits for approval; `job_id` is the plan's job.
    #[error("{message}")]
    AwaitingApproval { message: String, job_id: JobId },
    /// 403: a guardrail (four eyes, a quota, ownership) refuses the caller.
    #[error("{message}")]
    Denied {
        message: String,
        rule: &'static str,
        quota: Option<Value>,
    },
    /// 507 (no space) or 503 (a read-only or failing disk): the work could
    /// not be recorded or written; nothing was started. With `Retry-After`.
    #[error("{message}")]
    Unavailable {
        message: String,
        insufficient_storage: bool,
    },
    /// 503: the cluster could not be probed, or has no leader now. With
    /// `Retry-After: 1`.
    #[error("{0}")]
    ClusterUnavailable(String),
    /// 404: no such thing.
    #[error("{0}")]
    NotFound(String),
    /// 413: body too large.
    #[error("request body is too large")]
    TooLarge,
    /// 415: body is not JSON.
    #[error("expected a JSON body (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// 500: a fault of the server; the cause is logged, never sent.
    #[error("an unexpected error occurred")]
    Internal(#[source] anyhow_like::Error),
}

impl ApiError {
    /// A 400 naming one field and the reason it was rejected.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        let field = field.into();
        let reason = reason.into();
        let mut fields = Map::new();
        fields.insert(field.clone(), Value::String(reason.clone()));
        ApiError::Validation {
            message: format!("invalid field '{field}': {reason}"),
            fields,
        }
    }

    /// A 400 naming several fields.
    pub fn fields(fields: Map<String, Value>) -> ApiError {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        ApiError::Validation {
            message: format!("invalid fields: {}", names.join(", ")),
            fields,
        }
    }

    /// A 400 that concerns the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::Validation {
            message: message.into(),
            fields: Map::new(),
        }
    }

    /// A job store that failed: a disk fault it names (`503`/`507`), else a 500.
    pub fn store(err: crate::store::StoreError) -> ApiError {
        match err.storage_fault() {
            Some(fault) => ApiError::Unavailable {
                message: format!("{} under the job store: {err}", fault.describe()),
                insufficient_storage: fault == crate::disk::StorageFault::NoSpace,
            },
            None => ApiError::internal(err),
        }
    }

    /// A 500 from any internal cause.
    pub fn internal(err: impl Into<anyhow_like::Error>) -> ApiError {
        ApiError::Internal(err.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. }
            | ApiError::Variables { .. }
            | ApiError::ToolFailed { .. } => StatusCode::BAD_REQUEST,
            ApiError::Busy { .. } | ApiError::Conflict(_) | ApiError::AwaitingApproval { .. } => {
                StatusCode::CONFLICT
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } | ApiError::Denied { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable {
                insufficient_storage: true,
                ..
            } => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Unavailable { .. } | ApiError::ClusterUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\n  caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The JSON body of every error answer: `error` always, the other keys only
/// on the errors they belong to.
#[derive(Debug, Default, Serialize, ToSchema)]
#[schema(example = json!({"error": "invalid field 'confirm': is required", "fields": {"confirm": "is required"}}))]
pub struct ErrorBody {
    /// What went wrong, in one sentence.
    pub error: String,
    /// A failed tool run: why it ended, its standard error and the end of
    /// its standard output.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub details: Option<String>,
    /// Each rejected field (or terraform variable) and the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>, nullable = false)]
    pub fields: Option<Map<String, Value>>,
    /// The job that failed (400), or the one holding the workspace (409).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub job_id: Option<JobId>,
    /// How the failed job ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<JobStatus>,
    /// `generate`: names the stack does not declare.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub unknown_variables: Option<Vec<String>>,
    /// `generate`: required variables that were not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub missing_variables: Option<Vec<String>>,
    /// 403: the scope the route needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub required_scope: Option<crate::tokens::Scope>,
    /// 403 by a guardrail: `four_eyes`, `quota` or `owner`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub rule: Option<String>,
    /// 403 by a quota: `{"name", "limit", "used", "requested"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub quota: Option<Value>,
}

impl ErrorBody {
    fn new(error: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            ..ErrorBody::default()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut extra_header = None;
        let body = match self {
            ApiError::Validation { message, fields } if fields.is_empty() => {
                ErrorBody::new(message)
            }
            ApiError::Validation { message, fields } => ErrorBody {
                fields: Some(fields),
                ..ErrorBody::new(message)
            },
            ApiError::Variables {
                unknown,
                missing,
                invalid,
            } => {
                let mut parts = Vec::new();
                if !unknown.is_empty() {
                    parts.push(format!("unknown variables: {}", unknown.join(", ")));
                }
                if !missing.is_empty() {
                    parts.push(format!(
                        "missing required variables: {}",
                        missing.join(", ")
                    ));
                }
                if !invalid.is_empty() {
                    let names: Vec<&str> = invalid.keys().map(String::as_str).collect();
                    parts.push(format!("invalid values: {}", names.join(", ")));
                }
                ErrorBody {
                    unknown_variables: Some(unknown),
                    missing_variables: Some(missing),
                    fields: Some(invalid),
                    ..ErrorBody::new(parts.join("; "))
                }
            }
            ApiError::ToolFailed {
                error,
                details,
                job_id,
                status,
            } => ErrorBody {
                details: Some(details),
                job_id: Some(job_id),
                status: Some(status),
                ..ErrorBody::new(error)
            },
            ApiError::Busy { workspace, job_id } => {
                extra_header = Some((header::RETRY_AFTER, HeaderValue::from_static("5")));
                ErrorBody {
                    job_id: Some(job_id),
                    ..ErrorBody::new(format!(
                        "workspace '{workspace}' is busy with job {job_id}; retry when it has finished"
                    ))
                }
            }
            ApiError::Unavailable { message, .. } => {
                extra_header = Some((header::RETRY_AFTER, HeaderValue::from_static("30")));
                ErrorBody::new(message)
            }
            ApiError::ClusterUnavailable(message) => {
                extra_header = Some((header::RETRY_AFTER, HeaderValue::from_static("1")));
                ErrorBody::new(message)
            }
            ApiError::Unauthorized(message) => {
                extra_header = Some((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
                ErrorBody::new(message)
            }
            ApiError::Forbidden { message, required } => ErrorBody {
                required_scope: Some(required),
                ..ErrorBody::new(message)
            },
            ApiError::Denied {
                message,
                rule,
                quota,
            } => ErrorBody {
                rule: Some(rule.to_string()),
                quota,
                ..ErrorBody::new(message)
            },
            ApiError::AwaitingApproval { message, job_id } => ErrorBody {
                job_id: Some(job_id),
                ..ErrorBody::new(message)
            },
            ApiError::Internal(ref err) => {
                tracing::error!(error = ?err, "internal error");
                ErrorBody::new("An unexpected error occurred")
            }
            other => ErrorBody::new(other.to_string()),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some((name, value)) = extra_header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// What an operation of the application layer failed with, as the API
/// answers it.
impl From<crate::cluster::Error> for ApiError {
    fn from(err: crate::cluster::Error) -> ApiError {
        use crate::cluster::Error;
        match err {
            Error::Invalid { message, fields } => ApiError::Validation { message, fields },
            Error::Variables {
                unknown,
                missing,
                invalid,
            } => ApiError::Variables {
                unknown,
                missing,
                invalid,
            },
            Error::ToolFailed {
                error,
                details,
                job_id,
                status,
            } => ApiError::ToolFailed {
                error,
                details,
                job_id,
                status,
            },
            Error::Busy { workspace, job_id } => ApiError::Busy { workspace, job_id },
            Error::Conflict(message) => ApiError::Conflict(message),
            Error::AwaitingApproval { message, job_id } => {
                ApiError::AwaitingApproval { message, job_id }
            }
            Error::Denied {
                message,
                rule,
                quota,
            } => ApiError::Denied {
                message,
                rule,
                quota,
            },
            Error::NotFound(message) => ApiError::NotFound(message),
            Error::ClusterUnavailable(message) => ApiError::ClusterUnavailable(message),
            Error::Unavailable { message, fault } => ApiError::Unavailable {
                message,
                insufficient_storage: fault == crate::disk::StorageFault::NoSpace,
            },
            Error::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

/// A boxed error with its cause chain, for `ApiError::Internal`.
pub mod anyhow_like {
    pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
}

/// `Json<T>` whose rejections answer in the API's error shape. The body must
/// be a JSON object: serde would otherwise read a struct from an array.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match Json::<Value>::from_request(req, state).await {
            Ok(Json(value)) => value,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        if !value.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                if path == "." {
                    ApiError::bad_request(format!("invalid request body: {}", e.inner()))
                } else {
                    ApiError::field(path, e.inner().to_string())
                }
            })
    }
}

/// Like `ApiJson`, but an empty body (no content type) reads as `{}`: the run
/// endpoints' options are all optional and the original tool accepted no body.
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_body = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .map(|v| v != "0")
            .unwrap_or_else(|| req.headers().contains_key(header::TRANSFER_ENCODING));
        if !has_body {
            return Ok(OptionalJson(T::default()));
        }
        let ApiJson(value) = ApiJson::<T>::from_request(req, state).await?;
        Ok(OptionalJson(value))
    }
}

/// `Query<T>` whose rejections answer in the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                let reason = std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.body_text());
                ApiError::bad_request(format!("invalid query string: {reason}"))
            })
    }
}

/// `Path<T>` whose rejections answer in the API's error shape.
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::JsonDataError(err) => ApiError::bad_request(format!(
            "invalid request body: {}",
            std::error::Error::source(&err)
                .map(ToString::to_string)
                .unwrap_or_else(|| err.body_text())
        )),
        JsonRejection::JsonSyntaxError(err) => ApiError::bad_request(format!(
            "request body is not valid JSON: {}",
            std::error::Error::source(&err)
                .map(ToString::to_string)
                .unwrap_or_else(|| err.body_text())
        )),
        JsonRejection::BytesRejection(err) => {
            if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::bad_request(err.body_text())
            }
        }
        other => ApiError::bad_request(other.body_text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Error;

    #[test]
    fn each_failure_of_an_operation_has_its_status() {
        let status = |err: Error| ApiError::from(err).into_response().status();
        assert_eq!(status(Error::field("name", "bad")), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(Error::NotFound("gone".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(Error::Conflict("first".into())),
            StatusCode::CONFLICT
        );
        let busy = Error::Busy {
            workspace: "prod".into(),
            job_id: JobId::new(),
        };
        let answer = ApiError::from(busy).into_response();
        assert_eq!(answer.status(), StatusCode::CONFLICT);
        assert_eq!(answer.headers()[header::RETRY_AFTER], "5");
        let full = ApiError::from(Error::Unavailable {
            message: "no space left on device under DATA_DIR /d".into(),
            fault: crate::disk::StorageFault::NoSpace,
        })
        .into_response();
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(full.headers()[header::RETRY_AFTER], "30");
        let read_only = Error::Unavailable {
            message: "read-only file system under DATA_DIR /d".into(),
            fault: crate::disk::StorageFault::ReadOnly,
        };
        assert_eq!(status(read_only), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status(Error::internal("disk")),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let variables = Error::Variables {
            unknown: vec!["x".into()],
            missing: vec![],
            invalid: Map::new(),
        };
        assert_eq!(status(variables), StatusCode::BAD_REQUEST);
    }
}
