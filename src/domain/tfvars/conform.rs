//! Request values checked against a variable's type and converted to the
//! JSON form the renderer writes.

use serde_json::{Map, Number, Value};

use super::TfType;

/// Checks `value` against `ty` and converts it to the JSON form the renderer
/// writes (numeric strings become numbers, "true" becomes true, ...).
/// The error is a reason, for the caller to attach to the field name.
pub fn conform(value: &Value, ty: &TfType) -> Result<Value, String> {
    match (ty, value) {
        (_, Value::Null) => Ok(Value::Null),
        (TfType::String, Value::String(s)) => safe_string(s).map(|_| value.clone()),
        // Terraform converts numbers and bools to strings itself.
        (TfType::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
        (TfType::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
        (TfType::Number, Value::Number(_)) => Ok(value.clone()),
        (TfType::Number, Value::String(s)) => parse_number(s.trim())
            .map(Value::Number)
            .ok_or_else(|| format!("expected a number, got {s:?}")),
        (TfType::Bool, Value::Bool(_)) => Ok(value.clone()),
        (TfType::Bool, Value::String(s)) if s == "true" || s == "false" => {
            Ok(Value::Bool(s == "true"))
        }
        (TfType::List(item) | TfType::Set(item), Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| conform(v, item).map_err(|e| format!("[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (TfType::Tuple(types), Value::Array(items)) => {
            if types.len() != items.len() {
                return Err(format!(
                    "expected {} elements, got {}",
                    types.len(),
                    items.len()
                ));
            }
            items
                .iter()
                .zip(types)
                .enumerate()
                .map(|(i, (v, t))| conform(v, t).map_err(|e| format!("[{i}]: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        (TfType::Map(item), Value::Object(entries)) => {
            let mut out = Map::new();
            for (key, v) in entries {
                safe_string(key).map_err(|e| format!("key {key:?}: {e}"))?;
                out.insert(
                    key.clone(),
                    conform(v, item).map_err(|e| format!("[{key:?}]: {e}"))?,
                );
            }
            Ok(Value::Object(out))
        }
        (TfType::Object(fields), Value::Object(entries)) => {
            if let Some(extra) = entries
                .keys()
                .find(|k| !fields.iter().any(|(f, _)| f == *k))
            {
                return Err(format!("unknown attribute {extra:?}"));
            }
            let mut out = Map::new();
            for (name, t) in fields {
                let v = entries.get(name).unwrap_or(&Value::Null);
                out.insert(
                    name.clone(),
                    conform(v, t).map_err(|e| format!(".{name}: {e}"))?,
                );
            }
            Ok(Value::Object(out))
        }
        (TfType::Any, Value::String(s)) => safe_string(s).map(|_| value.clone()),
        (TfType::Any, Value::Array(items)) => conform(
            &Value::Array(items.clone()),
            &TfType::List(Box::new(TfType::Any)),
        ),
        (TfType::Any, Value::Object(_)) => conform(value, &TfType::Map(Box::new(TfType::Any))),
        (TfType::Any, _) => Ok(value.clone()),
        (ty, v) => Err(format!("expected {}, got {}", describe(ty), json_kind(v))),
    }
}

/// Strings may not carry what would change the meaning of the tfvars file
/// or of Terraform's templates, even though the renderer escapes all of it.
fn safe_string(s: &str) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("control character {:?} is not allowed", c));
    }
    if s.contains('"') {
        return Err("double quotes are not allowed".into());
    }
    if s.contains("${") || s.contains("%{") {
        return Err("template sequences ${ and %{ are not allowed".into());
    }
    if s.len() > 4096 {
        return Err("longer than 4096 bytes".into());
    }
    Ok(())
}

fn parse_number(s: &str) -> Option<Number> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Number::from(i));
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .and_then(Number::from_f64)
}

fn describe(ty: &TfType) -> &'static str {
    match ty {
        TfType::Any => "any value",
        TfType::String => "a string",
        TfType::Number => "a number",
        TfType::Bool => "a boolean",
        TfType::List(_) | TfType::Set(_) | TfType::Tuple(_) => "a list",
        TfType::Map(_) | TfType::Object(_) => "an object",
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_numeric_string_is_accepted_as_a_number() {
        assert_eq!(conform(&json!("2"), &TfType::Number).unwrap(), json!(2));
    }

    #[test]
    fn a_word_is_rejected_as_a_number() {
        assert!(conform(&json!("two"), &TfType::Number).is_err());
    }

    #[test]
    fn a_template_sequence_in_a_string_is_rejected() {
        for bad in ["${file(\"/etc/passwd\")}", "%{ if true }x%{ endif }"] {
            assert!(conform(&json!(bad), &TfType::String).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_quote_or_a_newline_in_a_string_is_rejected() {
        assert!(conform(&json!("a\"b"), &TfType::String).is_err());
        assert!(conform(&json!("a\nb = 1"), &TfType::String).is_err());
        assert!(conform(&json!("a\u{0}"), &TfType::String).is_err());
    }

    #[test]
    fn list_elements_are_checked_too() {
        let ty = TfType::List(Box::new(TfType::String));
        let err = conform(&json!(["ok", "${bad}"]), &ty).unwrap_err();
        assert!(err.starts_with("[1]"), "{err}");
    }
}
