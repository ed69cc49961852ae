//! `PgSettings`: postgresql.conf parameters sent to `/ansible/configure`.

use serde_json::Value;

/// A PostgreSQL parameter name: `name` or `extension.name`, lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgSettingName(String);

impl PgSettingName {
    pub fn parse(raw: &str) -> Result<PgSettingName, String> {
        let lower = raw.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('.').collect();
        let valid_part = |p: &str| {
            let mut chars = p.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && p.len() <= 63
        };
        if parts.len() > 2 || !parts.iter().all(|p| valid_part(p)) {
            return Err(
                "is not a PostgreSQL parameter name (letters, digits and _, optionally prefix.name)"
                    .into(),
            );
        }
        Ok(PgSettingName(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A parameter value, kept as text; safe for postgresql.conf (once quoted),
/// YAML, and Jinja (no template sequences).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgSettingValue(String);

impl PgSettingValue {
    pub fn parse(raw: &Value) -> Result<PgSettingValue, String> {
        let text = match raw {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => if *b { "on" } else { "off" }.to_string(),
            _ => return Err("must be a string, a number or a boolean".into()),
        };
        // Control characters, and what YAML readers refuse or treat as line breaks.
        if let Some(c) = text.chars().find(|c| {
            c.is_control()
                || matches!(
                    c,
                    '\u{feff}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}'
                )
                || ('\u{fdd0}'..='\u{fdef}').contains(c)
        }) {
            return Err(format!("control character {c:?} is not allowed"));
        }
        for sequence in ["{{", "}}", "{%", "%}", "{#", "#}"] {
            if text.contains(sequence) {
                return Err(format!("template sequence {sequence} is not allowed"));
            }
        }
        if text.len() > 1024 {
            return Err("longer than 1024 bytes".into());
        }
        Ok(PgSettingValue(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What [`PgSettingValue::parse`] accepts, as the API document shows it.
impl utoipa::PartialSchema for PgSettingValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .description(Some(
                "A PostgreSQL setting's value: a string, number or boolean (`on`/`off`) without \
                 control characters or Jinja sequences, at most 1024 bytes",
            ))
            .into()
    }
}

impl utoipa::ToSchema for PgSettingValue {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_plain_and_a_custom_parameter_name_are_accepted() {
        assert_eq!(
            PgSettingName::parse("Max_Connections").unwrap().as_str(),
            "max_connections"
        );
        assert!(PgSettingName::parse("pg_stat_statements.max").is_ok());
    }

    #[test]
    fn a_name_with_a_space_equals_or_newline_is_rejected() {
        for bad in ["max connections", "a=b", "a\nb", "", "1abc", "a.b.c", "a-b"] {
            assert!(PgSettingName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_and_booleans_become_text() {
        assert_eq!(PgSettingValue::parse(&json!(50)).unwrap().as_str(), "50");
        assert_eq!(PgSettingValue::parse(&json!(true)).unwrap().as_str(), "on");
    }

    #[test]
    fn a_jinja_sequence_in_a_value_is_rejected() {
        assert!(PgSettingValue::parse(&json!("{{ lookup('pipe', 'id') }}")).is_err());
        assert!(PgSettingValue::parse(&json!("{% raw %}")).is_err());
    }

    #[test]
    fn characters_yaml_refuses_are_rejected() {
        for bad in ["a\u{fffe}", "a\u{2028}b", "\u{85}"] {
            assert!(PgSettingValue::parse(&json!(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_newline_in_a_value_is_rejected() {
        assert!(PgSettingValue::parse(&json!("100\nshared_preload_libraries = 'x'")).is_err());
    }

    #[test]
    fn quotes_and_backslashes_are_kept_for_the_role_to_escape() {
        assert_eq!(
            PgSettingValue::parse(&json!(r"it's a \ path"))
                .unwrap()
                .as_str(),
            r"it's a \ path"
        );
    }

    #[test]
    fn a_list_value_is_rejected() {
        assert!(PgSettingValue::parse(&json!([1])).is_err());
    }
}
