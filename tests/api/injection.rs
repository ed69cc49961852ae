//! Hostile values: each is refused with a 400 naming the field, and no file
//! of the workspace changes by a single byte.

use serde_json::{Value, json};

use crate::ansible::{OUTPUTS_TWO_REPLICAS, configured_app};
use crate::helpers::*;

async fn assert_refused_unchanged(app: &TestApp, path: &str, body: Value, field: &str) {
    let before = snapshot(&app.workspace());
    let answer = app.post(path, body.clone()).await;
    assert_eq!(answer.status, 400, "{body} -> {:?}", answer.body);
    let named = answer.body["fields"].get(field).is_some()
        || answer.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains(field);
    assert!(named, "{field} not named in {:?}", answer.body);
    assert!(
        snapshot(&app.workspace()) == before,
        "{body} changed files on disk"
    );
}

#[tokio::test]
async fn hostile_tfvars_values_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    app.generate().await;
    for hostile in [
        "${file(\"/etc/passwd\")}",
        "%{ for x in [1] }x%{ endfor }",
        "a\" \nreplica_count = 99 #",
        "line1\nline2",
        "nul\u{0}byte",
    ] {
        let body = json!({"bastion_key_pair": "k", "db_key_pair": "k", "environment": hostile});
        assert_refused_unchanged(&app, "/terraform/generate", body, "environment").await;
    }
    let nested =
        json!({"bastion_key_pair": "k", "db_key_pair": "k", "allowed_cidrs": ["ok", "${x}"]});
    assert_refused_unchanged(&app, "/terraform/generate", nested, "allowed_cidrs").await;
    let map_key = json!({"bastion_key_pair": "k", "db_key_pair": "k", "tags": {"a\"=1": "v"}});
    assert_refused_unchanged(&app, "/terraform/generate", map_key, "tags").await;
}

#[tokio::test]
async fn hostile_key_paths_are_refused_and_change_nothing() {
    let app = configured_app().await;
    let good = key_file(&app, "good.pem");
    for hostile in [
        format!("{good}\nansible_connection=local"),
        format!("{good} -oProxyCommand=id"),
        format!("{good}=x"),
        "relative/key.pem".to_string(),
        "/etc/shadow".to_string(),
    ] {
        let body = json!({"bastion_key_path": hostile, "db_key_path": good});
        assert_refused_unchanged(&app, "/ansible/configure", body, "bastion_key_path").await;
    }
}

#[tokio::test]
async fn a_key_path_with_a_space_in_its_directory_is_refused() {
    let app = configured_app().await;
    let dir = app.root.path().join("my keys");
    std::fs::create_dir(&dir).unwrap();
    let key = dir.join("db.pem");
    std::fs::write(&key, "key").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&key).unwrap().permissions(),
        0o600,
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let body = json!({"bastion_key_path": key_file(&app, "b.pem"), "db_key_path": key});
    assert_refused_unchanged(&app, "/ansible/configure", body, "db_key_path").await;
}

#[tokio::test]
async fn hostile_postgresql_settings_are_refused_and_change_nothing() {
    let app = configured_app().await;
    app.fake("outputs", OUTPUTS_TWO_REPLICAS);
    let keys = json!({"bastion_key_path": key_file(&app, "b.pem"), "db_key_path": key_file(&app, "d.pem")});
    let cases: [(&str, Value); 6] = [
        ("work_mem", json!("{{ lookup('pipe', 'id') }}")),
        ("work_mem", json!("{% for x in y %}")),
        ("work_mem", json!("4MB\nshared_preload_libraries = 'evil'")),
        ("max connections", json!("5")),
        ("a=b", json!("5")),
        ("log_line_prefix\n", json!("x")),
    ];
    for (name, value) in cases {
        let mut body = keys.clone();
        body[name] = value;
        assert_refused_unchanged(&app, "/ansible/configure", body, name).await;
    }
}

#[tokio::test]
async fn a_shell_command_in_postgresql_version_is_refused() {
    let app = configured_app().await;
    let body = json!({"postgresql_version": "\"; rm -rf /"});
    assert_refused_unchanged(&app, "/ansible/run", body, "postgresql_version").await;
}

#[tokio::test]
async fn malformed_json_answers_in_the_error_shape() {
    let app = spawn_app().await;
    let broken = app
        .post_raw(
            "/terraform/generate",
            "application/json",
            b"{\"a\": ".to_vec(),
        )
        .await;
    assert_eq!(broken.status, 400);
    assert!(
        broken.body["error"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let not_object = app.post("/terraform/generate", json!([1, 2])).await;
    assert_eq!(not_object.status, 400);
    let wrong_type = app
        .post_raw("/terraform/plan", "text/plain", b"{}".to_vec())
        .await;
    assert_eq!(wrong_type.status, 415);
    let huge = app
        .post_raw(
            "/terraform/generate",
            "application/json",
            vec![b' '; 200_000],
        )
        .await;
    assert_eq!(huge.status, 413);
}

#[tokio::test]
async fn a_json_array_is_never_read_as_run_options() {
    let app = spawn_app().await;
    app.generate().await;
    for path in [
        "/terraform/init",
        "/terraform/plan",
        "/terraform/destroy",
        "/ansible/run",
    ] {
        for body in [json!([]), json!([true]), json!([false, false, 16])] {
            let answer = app.post(path, body.clone()).await;
            assert_eq!(answer.status, 400, "{path} {body}: {:?}", answer.body);
            assert!(
                answer.body["error"]
                    .as_str()
                    .unwrap()
                    .contains("JSON object")
            );
        }
    }
    assert!(app.calls().is_empty(), "no tool ran");
}

#[tokio::test]
async fn a_kernel_file_is_refused_as_a_key_path() {
    let app = configured_app().await;
    let good = key_file(&app, "good.pem");
    for kernel in ["/proc/self/environ", "/proc/1/environ", "/dev/null"] {
        let body = json!({"bastion_key_path": good, "db_key_path": kernel});
        assert_refused_unchanged(&app, "/ansible/configure", body, "db_key_path").await;
    }
}

#[tokio::test]
async fn run_options_and_yaml_words_are_handled_as_settings_should_be() {
    let app = configured_app().await;
    let keys = json!({"bastion_key_path": key_file(&app, "b.pem"), "db_key_path": key_file(&app, "d.pem")});
    let mut with_output = keys.clone();
    with_output["output"] = json!(true);
    assert_refused_unchanged(&app, "/ansible/configure", with_output, "output").await;
    let mut odd = keys.clone();
    odd["work_mem"] = json!("4MB\u{fffe}");
    assert_refused_unchanged(&app, "/ansible/configure", odd, "work_mem").await;
    // A YAML word as a name is quoted, so it stays a string key.
    let mut yes = keys.clone();
    yes["yes"] = json!("1");
    let answer = app.post("/ansible/configure", yes).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let vars = std::fs::read_to_string(app.workspace().join("ansible/postgresql.yml")).unwrap();
    assert!(vars.contains("  \"yes\": !unsafe \"1\"\n"), "{vars}");
}

#[tokio::test]
async fn a_null_postgresql_version_is_refused() {
    let app = configured_app().await;
    let body = json!({"postgresql_version": null});
    assert_refused_unchanged(&app, "/ansible/run", body, "postgresql_version").await;
}

#[tokio::test]
async fn query_and_path_errors_answer_json() {
    let app = spawn_app().await;
    for path in [
        "/jobs?limit=abc",
        "/jobs?limit=-1",
        "/jobs?bogus=1",
        "/jobs/%FF",
        "/jobs/00000000-0000-4000-8000-000000000000/log?after=x",
    ] {
        let answer = app.get(path).await;
        assert_eq!(answer.status, 400, "{path}: {:?}", answer.body);
        assert!(answer.body["error"].is_string(), "{path}");
    }
}
