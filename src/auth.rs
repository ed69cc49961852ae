//! Who may call which route: each route declares its [`Access`] where it is
//! routed ([`Access::declare`], recorded in its OpenAPI operation), and the
//! middleware checks the bearer token against it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::OpenApi;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa_axum::router::UtoipaMethodRouter;

use crate::config::Config;
use crate::error::ApiError;
use crate::tokens::{Principal, Scope, Tokens};

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, token or not.
    Open,
    /// `/metrics`: open unless `METRICS_REQUIRE_TOKEN=true`, then `read`.
    Metrics,
    /// A token with at least this scope.
    Needs(Scope),
}

/// The OpenAPI extension of an operation that holds its access.
pub const EXTENSION: &str = "x-required-scope";

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Open => "none",
            Access::Metrics => "metrics",
            Access::Needs(scope) => scope.as_str(),
        }
    }

    fn parse(text: &str) -> Option<Access> {
        match text {
            "none" => Some(Access::Open),
            "metrics" => Some(Access::Metrics),
            scope => scope.parse().ok().map(Access::Needs),
        }
    }

    /// Declares what every operation of a route needs; route modules wrap
    /// each `routes!(...)` in it.
    pub fn declare<S>(self, route: UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S> {
        let (schemas, mut paths, method_router) = route;
        for item in paths.paths.values_mut() {
            for (_, operation) in operations(item) {
                operation
                    .extensions
                    .get_or_insert_with(Extensions::default)
                    .insert(EXTENSION.to_string(), self.as_str().into());
            }
        }
        (schemas, paths, method_router)
    }

    /// What an operation declared, if it did.
    pub fn of(operation: &Operation) -> Option<Access> {
        let declared = operation.extensions.as_ref()?.get(EXTENSION)?;
        Access::parse(declared.as_str()?)
    }
}

/// The operations of a path, with their methods.
pub fn operations(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
        (Method::HEAD, &mut item.head),
        (Method::PATCH, &mut item.patch),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|op| (method, op)))
}

/// Every served route's access, read from the document built with the router.
#[derive(Debug, Default)]
pub struct AccessTable {
    routes: HashMap<(Method, String), Access>,
}

impl AccessTable {
    /// The routes of `document` and what each declared. A route that
    /// declared nothing needs `admin` (and fails `routes`' tests).
    pub fn of_document(document: &OpenApi) -> AccessTable {
        let mut document = document.clone();
        let mut routes = HashMap::new();
        for (path, item) in document.paths.paths.iter_mut() {
            for (method, operation) in operations(item) {
                if let Some(access) = Access::of(operation) {
                    routes.insert((method, path.clone()), access);
                }
            }
        }
        AccessTable { routes }
    }

    /// What `method` on the route template `route` needs (`None`: no route matched).
    pub fn access(&self, method: &Method, route: Option<&str>) -> Access {
        // axum answers HEAD with the GET handler.
        let method = if method == Method::HEAD {
            Method::GET
        } else {
            method.clone()
        };
        route
            .and_then(|route| self.routes.get(&(method, route.to_string())))
            .copied()
            .unwrap_or(Access::Needs(Scope::Admin))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("this route has no authenticated caller".into()))
    }
}

/// What the middleware needs from the configuration.
#[derive(Clone)]
pub struct Guard {
    tokens: Arc<Tokens>,
    routes: Arc<AccessTable>,
    metrics_require_token: bool,
}

impl Guard {
    /// The configured tokens, and what each served route declared.
    pub fn new(config: &Config, routes: AccessTable) -> Guard {
        Guard {
            tokens: Arc::new(config.api_tokens.clone()),
            routes: Arc::new(routes),
            metrics_require_token: config.metrics_require_token,
        }
    }
}

/// Middleware (after routing, so the matched route is known): checks the
/// bearer token against the route's scope and puts the `Principal` in the
/// request's extensions.
pub async fn authenticate(
    State(guard): State<Guard>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let required = match guard.routes.access(request.method(), route) {
        Access::Open => return next.run(request).await,
        Access::Metrics if !guard.metrics_require_token => return next.run(request).await,
        Access::Metrics => Scope::Read,
        Access::Needs(scope) => scope,
    };
    let principal = if guard.tokens.is_empty() {
        Principal::anonymous()
    } else {
        let Some(token) = bearer_token(request.headers()) else {
            return ApiError::Unauthorized(
                "authentication required: send Authorization: Bearer <token>".into(),
            )
            .into_response();
        };
        match guard.tokens.authenticate(token) {
            Some(principal) => principal,
            None => {
                tracing::warn!(method = %request.method(), path = %request.uri().path(), "invalid bearer token");
                return ApiError::Unauthorized("invalid token".into()).into_response();
            }
        }
    };
    if !principal.scope.allows(required) {
        tracing::warn!(
            token = %principal.name,
            scope = %principal.scope,
            required = %required,
            method = %request.method(),
            path = %request.uri().path(),
            "token lacks the scope"
        );
        return ApiError::Forbidden {
            required,
            message: format!(
                "this route needs the '{required}' scope; token '{}' has '{}'",
                principal.name, principal.scope
            ),
        }
        .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::TokenHash;

    fn entry(name: &str, scope: &str, token: &str) -> String {
        format!("{name}:{scope}:sha256:{}", TokenHash::of(token).to_hex())
    }

    #[test]
    fn a_declared_access_is_read_back_from_the_operation() {
        for access in [
            Access::Open,
            Access::Metrics,
            Access::Needs(Scope::Read),
            Access::Needs(Scope::Admin),
        ] {
            let mut operation = Operation::default();
            operation.extensions = Some(Extensions::default());
            operation
                .extensions
                .as_mut()
                .unwrap()
                .insert(EXTENSION.into(), access.as_str().into());
            assert_eq!(Access::of(&operation), Some(access));
        }
        assert_eq!(Access::of(&Operation::default()), None);
    }

    #[test]
    fn an_undeclared_route_or_no_route_needs_admin() {
        let table = AccessTable::default();
        let admin = Access::Needs(Scope::Admin);
        assert_eq!(table.access(&Method::GET, None), admin);
        assert_eq!(table.access(&Method::GET, Some("/anything")), admin);
    }

    #[test]
    fn the_bearer_scheme_is_required() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "bearer pgc_abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("pgc_abc"));
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }

    mod middleware {
        use super::*;
        use axum::Router;
        use axum::body::Body;
        use axum::http::StatusCode;
        use axum::routing::get;
        use tower::ServiceExt;

        fn app(tokens: Tokens) -> Router {
            let routes = [
                (
                    (Method::GET, "/jobs".to_string()),
                    Access::Needs(Scope::Read),
                ),
                ((Method::GET, "/health".to_string()), Access::Open),
            ];
            let guard = Guard {
                tokens: Arc::new(tokens),
                routes: Arc::new(AccessTable {
                    routes: routes.into_iter().collect(),
                }),
                metrics_require_token: false,
            };
            Router::new()
                .route(
                    "/jobs",
                    get(|p: Principal| async move { format!("{}:{}", p.name, p.scope) }),
                )
                .route("/health", get(|| async { "ok" }))
                .layer(axum::middleware::from_fn_with_state(guard, authenticate))
        }

        async fn call(app: Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
            let mut request = Request::get(path);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let response = app
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }

        #[tokio::test]
        async fn the_principal_reaches_the_handler() {
            let tokens = Tokens::parse(&entry("ci", "read", "pgc_t")).unwrap();
            assert_eq!(
                call(app(tokens), "/jobs", Some("pgc_t")).await,
                (StatusCode::OK, "ci:read".to_string())
            );
        }

        #[tokio::test]
        async fn without_tokens_everyone_is_an_anonymous_admin() {
            assert_eq!(
                call(app(Tokens::default()), "/jobs", None).await,
                (StatusCode::OK, "anonymous:admin".to_string())
            );
        }

        #[tokio::test]
        async fn open_routes_need_no_token() {
            let tokens = Tokens::parse(&entry("ci", "read", "pgc_t")).unwrap();
            assert_eq!(
                call(app(tokens.clone()), "/health", None).await.0,
                StatusCode::OK
            );
            assert_eq!(
                call(app(tokens), "/jobs", None).await.0,
                StatusCode::UNAUTHORIZED
            );
        }
    }
}
