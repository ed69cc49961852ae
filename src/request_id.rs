//! `x-request-id`: taken from the request when it is a sane token, made up
//! otherwise; returned in the answer, attached to the request's log lines and
//! to the jobs it starts.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

/// The request's id, in its extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Ids a client sends are kept when they are 1-128 of `[A-Za-z0-9._-]`, so
/// they are safe in logs and headers.
fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path()
    );
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_with_spaces_newlines_or_too_long_is_replaced() {
        assert!(acceptable("ci-run-42.step_3"));
        for bad in ["", "a b", "a\nb", "x".repeat(129).as_str(), "ünï"] {
            assert!(!acceptable(bad), "{bad:?}");
        }
    }
}
