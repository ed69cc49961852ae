//! JSON values written as HCL literals.

use serde_json::Value;

/// Writes a JSON value as an HCL literal. Strings are escaped for HCL's quoted
/// string syntax, including its template sequences, so any string round-trips.
pub fn to_hcl(value: &Value) -> String {
    let mut out = String::new();
    write_hcl(value, &mut out);
    out
}

fn write_hcl(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_hcl_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_hcl(item, out);
            }
            out.push(']');
        }
        Value::Object(entries) => {
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_hcl_string(key, out);
                out.push_str(" = ");
                write_hcl(item, out);
            }
            out.push('}');
        }
    }
}

fn write_hcl_string(s: &str, out: &mut String) {
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // `${` and `%{` start templates; doubling the sigil makes them literal.
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use hcl::Body;
    use hcl::eval::{Context, Evaluate};
    use serde_json::json;

    use super::*;

    #[test]
    fn the_hcl_encoder_round_trips_every_hostile_string() {
        let hostile = "q\"uote \\back ${interp} %{dir} $${kept} \n new\r\t \u{1} end";
        let rendered = format!("x = {}\n", to_hcl(&json!(hostile)));
        let body: Body = hcl::parse(&rendered).unwrap();
        let attr = body.attributes().next().unwrap();
        let value = attr.expr.evaluate(&Context::new()).unwrap();
        assert_eq!(value, hcl::Value::from(hostile));
    }

    #[test]
    fn lists_and_maps_render_as_hcl() {
        assert_eq!(
            to_hcl(&json!({"a": [1, "b", true, null]})),
            r#"{"a" = [1, "b", true, null]}"#
        );
    }
}
