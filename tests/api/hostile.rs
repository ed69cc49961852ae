//! The hostile-input corpus: well over a hundred requests across every
//! endpoint. Each must answer 4xx with a JSON `error`, never 5xx, and leave
//! every file of the data directory byte-for-byte unchanged.

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use crate::ansible::configured_app;
use crate::helpers::*;

/// A request of the corpus.
enum Body {
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

struct Case {
    method: &'static str,
    path: String,
    body: Body,
    label: String,
}

fn post(path: &str, body: Value, label: impl Into<String>) -> Case {
    Case {
        method: "POST",
        path: path.into(),
        body: Body::Json(body),
        label: label.into(),
    }
}

/// Strings that must never reach HCL, INI, YAML or postgresql.conf as they are.
const HOSTILE_STRINGS: [&str; 10] = [
    "${file(\"/etc/passwd\")}",
    "%{ if true }x%{ endif }",
    "quote\"inside",
    "line\nbreak = 1",
    "carriage\rreturn",
    "nul\u{0}byte",
    "tab\there",
    "escape\u{1b}[31m",
    "delete\u{7f}",
    "{{ lookup('pipe', 'id') }}\n",
];

fn corpus(app: &TestApp) -> Vec<Case> {
    let mut cases = Vec::new();
    let base = || json!({"bastion_key_pair": "k", "db_key_pair": "k"});

    // generate: every string field, list element, map key and map value.
    for s in HOSTILE_STRINGS {
        for field in ["bastion_key_pair", "db_key_pair", "environment"] {
            let mut body = base();
            body[field] = json!(s);
            cases.push(post(
                "/terraform/generate",
                body,
                format!("generate {field} {s:?}"),
            ));
        }
        let mut body = base();
        body["allowed_cidrs"] = json!(["10.0.0.0/8", s]);
        cases.push(post(
            "/terraform/generate",
            body,
            format!("generate list element {s:?}"),
        ));
        let mut body = base();
        body["tags"] = json!({ "team": s });
        cases.push(post(
            "/terraform/generate",
            body,
            format!("generate map value {s:?}"),
        ));
        let mut body = base();
        body["tags"] = json!({ s: "x" });
        cases.push(post(
            "/terraform/generate",
            body,
            format!("generate map key {s:?}"),
        ));
    }
    for (label, value) in [
        ("word", json!("two")),
        ("list", json!([2])),
        ("object", json!({"n": 2})),
        ("bool", json!(true)),
        ("negative", json!(-1)),
        ("shell", json!("2; rm -rf /")),
        ("empty", json!("")),
    ] {
        let mut body = base();
        body["replica_count"] = value;
        cases.push(post(
            "/terraform/generate",
            body,
            format!("generate replica_count {label}"),
        ));
    }
    for name in ["../../etc/passwd", "a=b", "${x}", "replica_count\n"] {
        let mut body = base();
        body[name] = json!("x");
        cases.push(post(
            "/terraform/generate",
            body,
            format!("generate unknown name {name:?}"),
        ));
    }
    for shell in ["; rm -rf /", "$(id)", "`id`", "a && b", "Staging"] {
        let mut body = base();
        body["environment"] = json!(shell);
        cases.push(post(
            "/terraform/generate",
            body,
            format!("generate environment {shell:?}"),
        ));
    }
    let mut body = base();
    body["tags"] = json!("not a map");
    cases.push(post("/terraform/generate", body, "generate map as string"));
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    cases.push(Case {
        method: "POST",
        path: "/terraform/generate".into(),
        body: Body::Raw("application/json", deep.into_bytes()),
        label: "generate deeply nested".into(),
    });

    // configure: key paths.
    let good = key_file(app, "hostile-good.pem");
    let dir = app.root.path();
    let open_key = dir.join("open.pem");
    std::fs::write(&open_key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link_open = dir.join("link-open.pem");
    let _ = std::os::unix::fs::symlink(&open_key, &link_open);
    let link_dir = dir.join("link-dir.pem");
    let _ = std::os::unix::fs::symlink(dir, &link_dir);
    let link_shadow = dir.join("link-shadow.pem");
    let _ = std::os::unix::fs::symlink("/etc/shadow", &link_shadow);
    let not_a_key = dir.join("not-a-key");
    std::fs::write(&not_a_key, "ssh-ed25519 AAAA public\n").unwrap();
    std::fs::set_permissions(&not_a_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key_paths: Vec<String> = vec![
        format!("{good}\nansible_connection=local"),
        format!("{good} -oProxyCommand=id"),
        format!("{good}=x"),
        format!("{good};id"),
        format!("{good}\"x"),
        format!("{good}{{{{x}}}}"),
        "relative/key.pem".into(),
        format!("{}/../{}", dir.display(), "open.pem"),
        link_open.display().to_string(),
        link_dir.display().to_string(),
        link_shadow.display().to_string(),
        "/etc/shadow".into(),
        "/proc/self/environ".into(),
        "/dev/null".into(),
        not_a_key.display().to_string(),
        "/nonexistent/key.pem".into(),
        String::new(),
    ];
    for path in &key_paths {
        for field in ["bastion_key_path", "db_key_path"] {
            let mut body = json!({"bastion_key_path": good, "db_key_path": good});
            body[field] = json!(path);
            cases.push(post(
                "/ansible/configure",
                body,
                format!("configure {field} {path:?}"),
            ));
        }
    }
    for wrong in [json!(1), json!(null), json!(["a"]), json!({"p": "a"})] {
        let body = json!({"bastion_key_path": wrong, "db_key_path": good});
        cases.push(post(
            "/ansible/configure",
            body,
            format!("configure key path {wrong}"),
        ));
    }
    // configure: PostgreSQL settings.
    for name in [
        "max connections",
        "a=b",
        "a\nb",
        "",
        "1abc",
        "a.b.c",
        "output",
        "async",
        "{{x}}",
        "x;y",
        "work_mem\u{0}",
    ] {
        let mut body = json!({"bastion_key_path": good, "db_key_path": good});
        body[name] = json!("1");
        cases.push(post(
            "/ansible/configure",
            body,
            format!("configure setting name {name:?}"),
        ));
    }
    for value in [
        json!("{{ x }}"),
        json!("{% x %}"),
        json!("{# x #}"),
        json!("4MB\nshared_preload_libraries = 'evil'"),
        json!("a\rb"),
        json!("nul\u{0}"),
        json!("a\u{2028}b"),
        json!("a\u{fffe}"),
        json!([1]),
        json!({"a": 1}),
        json!(null),
        json!("x".repeat(2000)),
    ] {
        let mut body = json!({"bastion_key_path": good, "db_key_path": good});
        body["work_mem"] = value.clone();
        cases.push(post(
            "/ansible/configure",
            body,
            format!("configure setting value {value}"),
        ));
    }

    // run: options and version.
    for version in [
        json!("\"; rm -rf /"),
        json!("16; id"),
        json!("$(id)"),
        json!(16.5),
        json!(9),
        json!(99),
        json!(-1),
        json!(""),
        json!(null),
        json!([16]),
        json!({"v": 16}),
        json!(true),
    ] {
        cases.push(post(
            "/ansible/run",
            json!({"postgresql_version": version}),
            format!("run version {version}"),
        ));
    }
    // destroy: the confirmation must be the workspace's name, exactly.
    for confirm in [
        json!("default\u{0}"),
        json!("default\n"),
        json!(" default"),
        json!("../default"),
        json!("*"),
        json!(true),
        json!(["default"]),
        json!({"name": "default"}),
    ] {
        cases.push(post(
            "/terraform/destroy",
            json!({"confirm": confirm}),
            format!("destroy confirm {confirm}"),
        ));
    }
    for path in [
        "/ansible/run",
        "/terraform/init",
        "/terraform/plan",
        "/terraform/apply",
        "/terraform/destroy",
        "/terraform/output",
    ] {
        for options in [
            json!({"output": "true"}),
            json!({"output": 1}),
            json!({"async": "yes"}),
            json!({"unknown": true}),
            json!([true]),
        ] {
            cases.push(post(
                path,
                options.clone(),
                format!("{path} options {options}"),
            ));
        }
    }
    cases.push(post(
        "/ansible/vault",
        json!({"replication_password": "short"}),
        "vault short password",
    ));
    cases.push(post(
        "/ansible/vault",
        json!({"replication_password": "long enough but\nnewline"}),
        "vault newline",
    ));
    cases.push(post(
        "/ansible/vault",
        json!({"replication_password": 123456789012345_u64}),
        "vault number",
    ));

    // deploy: the generate and configure bodies inside it, and its own shape.
    let good_key = key_file(app, "deploy_key");
    let deploy = |variables: Value, configure: Value| json!({"variables": variables, "configure": configure, "postgresql_version": 15});
    let good_configure = || json!({"bastion_key_path": good_key, "db_key_path": good_key});
    for s in HOSTILE_STRINGS {
        let mut variables = base();
        variables["environment"] = json!(s);
        cases.push(post(
            "/deploy",
            deploy(variables, good_configure()),
            format!("deploy variables.environment {s:?}"),
        ));
        let mut configure = good_configure();
        configure["db_key_path"] = json!(s);
        cases.push(post(
            "/deploy",
            deploy(base(), configure),
            format!("deploy configure.db_key_path {s:?}"),
        ));
    }
    for value in [
        "{{ lookup('pipe', 'id') }}",
        "{% raw %}",
        "4MB\nshared_preload_libraries = 'evil'",
        "nul\u{0}",
        "a\u{2028}b",
    ] {
        let mut configure = good_configure();
        configure["work_mem"] = json!(value);
        cases.push(post(
            "/deploy",
            deploy(base(), configure),
            format!("deploy configure.work_mem {value:?}"),
        ));
    }
    for body in [
        json!({"variables": base()}),
        json!({"configure": good_configure()}),
        json!({"variables": "x", "configure": good_configure()}),
        json!({"variables": base(), "configure": [1]}),
        json!({"variables": base(), "configure": good_configure(), "postgresql_version": "16; id"}),
        json!({"variables": base(), "configure": good_configure(), "async": 1}),
        json!({"variables": base(), "configure": good_configure(), "resume": true}),
    ] {
        cases.push(post(
            "/deploy",
            body.clone(),
            format!("deploy shape {body}"),
        ));
    }
    for body in [json!({"async": "yes"}), json!({"from": "run"}), json!([])] {
        cases.push(post(
            "/deploy/resume",
            body.clone(),
            format!("deploy resume {body}"),
        ));
    }
    for path in [
        "/cluster?postgresql_version=9",
        "/cluster?postgresql_version=%24(id)",
        "/cluster?postgresql_version=15%0A",
        "/cluster?host=primary1",
        "/workspaces/..%2F..%2Fetc/cluster",
        "/workspaces/nope/cluster",
    ] {
        cases.push(Case {
            method: "GET",
            path: path.into(),
            body: Body::Json(Value::Null),
            label: format!("GET {path}"),
        });
    }

    // Bodies that are not JSON objects at all.
    for path in [
        "/terraform/generate",
        "/ansible/configure",
        "/ansible/run",
        "/deploy",
    ] {
        cases.push(Case {
            method: "POST",
            path: path.into(),
            body: Body::Raw("application/json", vec![b'{', 0xff, 0xfe, b'}']),
            label: format!("{path} invalid UTF-8"),
        });
        cases.push(Case {
            method: "POST",
            path: path.into(),
            body: Body::Raw("text/plain", b"{}".to_vec()),
            label: format!("{path} text/plain"),
        });
        cases.push(Case {
            method: "POST",
            path: path.into(),
            body: Body::Raw("application/json", vec![b' '; 100_000]),
            label: format!("{path} oversized"),
        });
    }

    // Jobs: queries and paths.
    for path in [
        "/jobs?limit=abc",
        "/jobs?limit=-1",
        "/jobs?cursor=-5",
        "/jobs?status=exploded",
        "/jobs?kind=rm",
        "/jobs?bogus=1",
        "/jobs/..%2F..%2Fetc%2Fpasswd",
        "/jobs/%FF",
        "/jobs/00000000-0000-4000-8000-000000000000",
        "/jobs/not-a-job/log",
        "/jobs/00000000-0000-4000-8000-000000000000/log?after=x",
    ] {
        cases.push(Case {
            method: "GET",
            path: path.into(),
            body: Body::Json(Value::Null),
            label: format!("GET {path}"),
        });
    }
    cases.push(Case {
        method: "POST",
        path: "/jobs/00000000-0000-4000-8000-000000000000/cancel".into(),
        body: Body::Json(Value::Null),
        label: "cancel unknown job".into(),
    });
    cases
}

#[tokio::test]
async fn every_hostile_request_is_a_4xx_json_error_and_changes_no_file() {
    let app = configured_app().await;
    app.generate().await;
    let cases = corpus(&app);
    assert!(cases.len() >= 100, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let before = snapshot(&app.workspace());
        let url = format!("{}{}", app.address, case.path);
        let request = match (&case.body, case.method) {
            (_, "GET") => app.client.get(&url),
            (Body::Json(Value::Null), _) => app.client.post(&url),
            (Body::Json(body), _) => app.client.post(&url).json(body),
            (Body::Raw(content_type, bytes), _) => app
                .client
                .post(&url)
                .header("content-type", *content_type)
                .body(bytes.clone()),
        };
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let json: Option<Value> = serde_json::from_str(&text).ok();
        let has_error = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .is_some_and(Value::is_string);
        let unchanged = snapshot(&app.workspace()) == before;
        if !(400..500).contains(&status) || !has_error || !unchanged {
            failures.push(format!(
                "{}: {status} unchanged={unchanged} {}",
                case.label,
                text.chars().take(200).collect::<String>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(
        app.calls().len() == 1,
        "no tool ran besides configure's terraform output: {:?}",
        app.calls()
    );
}
