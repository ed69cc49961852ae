//! `/openapi.json`: it describes every route the router serves, and nothing
//! else, and it is a valid OpenAPI 3.1 document.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use pgcluster_api::cluster::App;
use pgcluster_api::config::Config;
use pgcluster_api::startup::router;
use serde_json::Value;
use tower::ServiceExt;

use crate::helpers::*;

/// The methods an OpenAPI path item can hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The real router, as `Application::build` makes it.
fn real_router(root: &std::path::Path) -> Router {
    let config = Config::from_vars(test_vars(root, Tools::Fake)).expect("test configuration");
    router(App::new(config).expect("application"))
}

/// Every (METHOD, path) the router serves, found without a list of routes:
/// the paths from axum's own description of the router (its `Debug` output
/// names every path it matches), each path's methods from the `Allow` header
/// of the 405 it answers to a method no route has (RFC 9110). `HEAD` is left
/// out: axum answers it with the `GET` handler.
async fn served_routes(router: &Router) -> BTreeSet<(String, String)> {
    let description = format!("{router:?}");
    // The routes; the fallback router after them holds no documented path.
    let routes_part = description
        .split("fallback_router")
        .next()
        .unwrap_or_default();
    let path_of = regex::Regex::new(r#"RouteId\(\d+\): "(/[^"]*)""#).unwrap();
    let paths: BTreeSet<String> = path_of
        .captures_iter(routes_part)
        .map(|c| c[1].to_string())
        .collect();
    assert!(
        paths.contains("/health") && paths.contains("/workspaces/{name}/terraform/plan"),
        "axum's description of the router no longer lists its paths as this test reads \
         them; adapt served_routes(): {description:.3000}"
    );
    let param = regex::Regex::new(r"\{\*?[^}]+\}").unwrap();
    let mut routes = BTreeSet::new();
    for path in paths {
        let concrete = param.replace_all(&path, "x").into_owned();
        let probe = Request::builder()
            .method(Method::from_bytes(b"PROBE").unwrap())
            .uri(&concrete)
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(probe).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "PROBE {concrete} (route {path})"
        );
        let allow = response
            .headers()
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(!allow.is_empty(), "no Allow header for {path}");
        for method in allow.split(',').map(str::trim) {
            if method != "HEAD" {
                routes.insert((method.to_string(), path.clone()));
            }
        }
    }
    routes
}

async fn get_document(router: &Router) -> Value {
    let response = router
        .clone()
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).expect("the document is JSON")
}

/// Every (METHOD, path) the document describes.
fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn every_route_the_router_serves_is_in_the_document_and_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let router = real_router(root.path());
    let served = served_routes(&router).await;
    let documented = documented_routes(&get_document(&router).await);

    let undocumented: Vec<String> = served
        .difference(&documented)
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "served by the router but missing from /openapi.json: {undocumented:?}. Annotate each \
         handler with #[utoipa::path(...)] and register it with utoipa_axum::routes!() in its \
         module's router(), merged in routes::api()"
    );
    let stale: Vec<String> = documented
        .difference(&served)
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        stale.is_empty(),
        "in /openapi.json but not served: {stale:?}"
    );
    // What the product promises, so the test cannot pass on an empty router.
    for (method, path) in [
        ("POST", "/terraform/generate"),
        ("POST", "/terraform/destroy"),
        ("POST", "/workspaces/{name}/terraform/apply"),
        ("POST", "/workspaces/{name}/ansible/run"),
        ("POST", "/ansible/vault"),
        ("POST", "/jobs/{id}/cancel"),
        ("GET", "/jobs/{id}/events"),
        ("GET", "/ready"),
        ("DELETE", "/workspaces/{name}"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/cluster/primary"),
        ("GET", "/workspaces/{name}/cluster/events"),
        ("POST", "/workspaces/{name}/cluster/switchover"),
        ("POST", "/cluster/failover"),
        ("POST", "/cluster/restart"),
        ("POST", "/workspaces/{name}/cluster/reinit"),
    ] {
        assert!(
            served.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is not served"
        );
    }
}

#[tokio::test]
async fn every_route_the_router_serves_declares_its_scope() {
    let root = tempfile::tempdir().unwrap();
    let router = real_router(root.path());
    let served = served_routes(&router).await;
    let doc = get_document(&router).await;
    let undeclared: Vec<String> = served
        .iter()
        .filter(|(method, path)| {
            let operation = &doc["paths"][path][method.to_lowercase()];
            !matches!(
                operation["x-required-scope"].as_str(),
                Some("none" | "metrics" | "read" | "plan" | "apply" | "admin")
            )
        })
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        undeclared.is_empty(),
        "served without a declared scope (wrap its routes!() in Access::...declare() where \
         it is routed): {undeclared:?}"
    );
}

#[tokio::test]
async fn the_cluster_operations_declare_their_scopes() {
    let root = tempfile::tempdir().unwrap();
    let doc = get_document(&real_router(root.path())).await;
    for prefix in ["", "/workspaces/{name}"] {
        for (method, path, scope) in [
            ("get", "/cluster/primary", "read"),
            ("get", "/cluster/events", "read"),
            ("post", "/cluster/switchover", "apply"),
            ("post", "/cluster/restart", "apply"),
            ("post", "/cluster/reinit", "apply"),
            ("post", "/cluster/failover", "admin"),
        ] {
            let operation = &doc["paths"][format!("{prefix}{path}")][method];
            assert_eq!(
                operation["x-required-scope"], scope,
                "{method} {prefix}{path}"
            );
            assert_eq!(
                operation["security"],
                serde_json::json!([{ "bearer": [scope] }])
            );
        }
    }
    let primary = &doc["paths"]["/cluster/primary"]["get"]["responses"];
    assert!(primary["503"].is_object(), "{primary}");
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let root = tempfile::tempdir().unwrap();
    let doc = get_document(&real_router(root.path())).await;
    let problems = openapi_31_problems(&doc);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn the_document_and_the_docs_need_no_token() {
    let app = spawn_app_with(AppOptions {
        vars: vec![(
            "API_TOKENS",
            format!(
                "ci:admin:sha256:{}",
                pgcluster_api::tokens::TokenHash::of("pgc_t").to_hex()
            ),
        )],
        ..AppOptions::default()
    })
    .await;
    let document = app.get("/openapi.json").await;
    assert_eq!(document.status, 200);
    assert!(
        document.body["openapi"]
            .as_str()
            .unwrap()
            .starts_with("3.1")
    );
    for path in [
        "/docs/",
        "/docs/swagger-ui.css",
        "/docs/swagger-initializer.js",
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // The routes the document describes still need the token.
    assert_eq!(app.get("/jobs").await.status, 401);
}

#[tokio::test]
async fn docs_redirects_to_the_page_and_unknown_files_are_a_json_404() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let docs = client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 308);
    assert_eq!(docs.headers()["location"], "/docs/");
    let page = client
        .get(format!("{}/docs/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("swagger-ui"));
    let initializer = client
        .get(format!("{}/docs/swagger-initializer.js", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("\"/openapi.json\""), "{initializer}");
    let missing = app.get("/docs/nothing-here.js").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body["error"].is_string());
}

/// What makes a document invalid OpenAPI 3.1, or unusable: each problem found.
fn openapi_31_problems(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let version = doc["openapi"].as_str().unwrap_or_default();
    if !version.starts_with("3.1.") {
        problems.push(format!("openapi is {version:?}, not 3.1.x"));
    }
    for key in ["title", "version"] {
        if !doc["info"][key].is_string() {
            problems.push(format!("info.{key} is missing"));
        }
    }
    let schemes: BTreeSet<&String> = doc["components"]["securitySchemes"]
        .as_object()
        .map(|s| s.keys().collect())
        .unwrap_or_default();
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    let status = regex::Regex::new(r"^([1-5][0-9][0-9]|[1-5]XX|default)$").unwrap();
    let template = regex::Regex::new(r"\{([^}]+)\}").unwrap();
    let mut operation_ids: BTreeMap<String, String> = BTreeMap::new();
    let Some(paths) = doc["paths"].as_object().filter(|p| !p.is_empty()) else {
        return vec!["no paths".into()];
    };
    for (path, item) in paths {
        if !path.starts_with('/') {
            problems.push(format!("path {path} does not start with /"));
        }
        let in_template: BTreeSet<String> = template
            .captures_iter(path)
            .map(|c| c[1].to_string())
            .collect();
        let mut operations = 0;
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            operations += 1;
            let at = format!("{} {path}", method.to_uppercase());
            match operation["operationId"].as_str() {
                Some(id) => {
                    if let Some(other) = operation_ids.insert(id.to_string(), at.clone()) {
                        problems.push(format!("{at}: operationId {id} is also {other}'s"));
                    }
                }
                None => problems.push(format!("{at}: no operationId")),
            }
            let responses = operation["responses"].as_object();
            match responses {
                Some(responses) if !responses.is_empty() => {
                    for (code, response) in responses {
                        if !status.is_match(code) {
                            problems.push(format!("{at}: response key {code}"));
                        }
                        let response = resolve(doc, response);
                        if !response.is_some_and(|r| r["description"].is_string()) {
                            problems.push(format!("{at} {code}: no description"));
                        }
                    }
                }
                _ => problems.push(format!("{at}: no responses")),
            }
            // Path parameters: exactly the template's, each required.
            let parameters = item["parameters"]
                .as_array()
                .into_iter()
                .chain(operation["parameters"].as_array())
                .flatten()
                .filter_map(|p| resolve(doc, p))
                .filter(|p| p["in"] == "path");
            let mut declared = BTreeSet::new();
            for parameter in parameters {
                let name = parameter["name"].as_str().unwrap_or_default().to_string();
                if parameter["required"] != true {
                    problems.push(format!("{at}: path parameter {name} is not required"));
                }
                declared.insert(name);
            }
            if declared != in_template {
                problems.push(format!(
                    "{at}: path parameters {declared:?}, template {in_template:?}"
                ));
            }
            for requirement in operation["security"].as_array().into_iter().flatten() {
                for scheme in requirement
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k)
                {
                    if !schemes.contains(scheme) {
                        problems.push(format!("{at}: unknown security scheme {scheme}"));
                    }
                }
            }
            for tag in operation["tags"].as_array().into_iter().flatten() {
                if !tags.contains(tag.as_str().unwrap_or_default()) {
                    problems.push(format!("{at}: undeclared tag {tag}"));
                }
            }
        }
        if operations == 0 {
            problems.push(format!("{path}: no operations"));
        }
    }
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    if refs.is_empty() {
        problems.push("no $ref at all: the components are not used".into());
    }
    for reference in refs {
        if !reference.starts_with("#/") || doc.pointer(&reference[1..]).is_none() {
            problems.push(format!("$ref {reference} does not resolve"));
        }
    }
    problems
}

/// A value, or what its `$ref` points to.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> Option<&'a Value> {
    match value["$ref"].as_str() {
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|pointer| doc.pointer(pointer)),
        None => Some(value),
    }
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(reference)) => refs.push(reference.clone()),
                    _ => collect_refs(inner, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}
