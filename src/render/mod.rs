//! The minijinja templates of `TEMPLATE_DIR` and the filters that make values
//! safe for each target syntax.

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value, path_loader};
use serde::Serialize;
use std::path::Path;

use crate::domain::tfvars::to_hcl;

/// The templates the server renders; all are loaded (and checked) at start-up.
pub const TEMPLATES: [&str; 5] = [
    "terraform.tfvars.j2",
    "hosts.ini.j2",
    "ansible.cfg.j2",
    "ssh_config.j2",
    "postgresql.yml.j2",
];

/// Renders the project's templates.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    /// Loads the templates of `dir`; fails naming the template that is missing or broken.
    pub fn load(dir: &Path) -> Result<Renderer, String> {
        let mut env = Environment::new();
        env.set_loader(path_loader(dir));
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Nothing is HTML here: values are made safe by the filters below.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_filter("hcl", hcl_filter);
        env.add_filter("yaml_str", yaml_str_filter);
        for name in TEMPLATES {
            env.get_template(name)
                .map_err(|e| format!("template {name} in {}: {e}", dir.display()))?;
        }
        Ok(Renderer { env })
    }

    pub fn render(&self, name: &str, context: impl Serialize) -> Result<String, Error> {
        self.env
            .get_template(name)?
            .render(minijinja::value::Serde(context))
    }
}

/// Any value as an HCL literal (strings escaped, template sequences neutralised).
fn hcl_filter(value: Value) -> Result<String, Error> {
    let json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(to_hcl(&json))
}

/// A string as a YAML double-quoted scalar (JSON string syntax is valid YAML).
fn yaml_str_filter(value: Value) -> Result<String, Error> {
    let text = match value.as_str() {
        Some(s) => s.to_string(),
        None => value.to_string(),
    };
    serde_json::to_string(&text).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn renderer() -> Renderer {
        Renderer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")).unwrap()
    }

    #[test]
    fn the_shipped_templates_load() {
        renderer();
    }

    #[test]
    fn tfvars_values_are_hcl_literals() {
        let text = renderer()
            .render(
                "terraform.tfvars.j2",
                json!({"variables": {"environment": "a\"b${x}", "replica_count": 2}}),
            )
            .unwrap();
        assert!(text.contains(r#"environment = "a\"b$${x}""#), "{text}");
        assert!(text.contains("replica_count = 2"), "{text}");
    }

    #[test]
    fn settings_are_unsafe_yaml_strings() {
        let text = renderer()
            .render(
                "postgresql.yml.j2",
                json!({"settings": {"max_connections": "77"}, "stack_vars": {},
                    "synchronous_mode": true,
                    "backup_repository": {"type": "posix", "path": "/srv/b{{x}}"},
                    "backup_retention_full": 3}),
            )
            .unwrap();
        assert!(text.contains("patroni_synchronous_mode: true"), "{text}");
        assert!(text.contains("pgbackrest_retention_full: 3"), "{text}");
        assert!(text.contains(r#"  path: !unsafe "/srv/b{{x}}""#), "{text}");
        assert!(
            text.contains(r#""max_connections": !unsafe "77""#),
            "{text}"
        );
    }
}
