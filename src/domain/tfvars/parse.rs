//! The stack's declarations: its `*.tf` files and the `variable` blocks and
//! type constraints they hold.

use std::path::{Path, PathBuf};

use hcl::eval::{Context, Evaluate};
use hcl::{Body, Expression, ObjectKey};

use super::{StackVariables, TfType, VariableSpec};

/// The `*.tf` files directly in `dir`: `variables.tf` first, then the rest
/// by name (a stable declaration order).
pub(super) fn stack_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read stack directory {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "tf") && path.is_file())
        .collect();
    files.sort_by_key(|p| (p.file_name() != Some("variables.tf".as_ref()), p.clone()));
    Ok(files)
}

impl StackVariables {
    /// Reads every `variable` block of the `*.tf` files directly in `dir`.
    pub fn from_dir(dir: &Path) -> Result<StackVariables, String> {
        StackVariables::from_files(&stack_files(dir)?)
    }

    pub(super) fn from_files(files: &[PathBuf]) -> Result<StackVariables, String> {
        let mut variables = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let parsed =
                StackVariables::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            variables.extend(parsed.variables);
        }
        Ok(StackVariables { variables })
    }

    /// Parses the `variable` blocks of one HCL document.
    pub fn parse(text: &str) -> Result<StackVariables, String> {
        let body: Body = hcl::parse(text).map_err(|e| e.to_string())?;
        let mut variables = Vec::new();
        for block in body
            .blocks()
            .filter(|b| b.identifier.as_str() == "variable")
        {
            let [label] = block.labels.as_slice() else {
                return Err("a variable block needs exactly one label".into());
            };
            let name = label.as_str().to_string();
            if !is_identifier(&name) {
                return Err(format!("variable name {name:?} is not an identifier"));
            }
            let mut spec = VariableSpec {
                name: name.clone(),
                ty: TfType::Any,
                default: None,
                description: None,
                validations: Vec::new(),
            };
            for validation in block
                .body
                .blocks()
                .filter(|b| b.identifier.as_str() == "validation")
            {
                let attr = |key: &str| validation.body.attributes().find(|a| a.key.as_str() == key);
                if let Some(condition) = attr("condition") {
                    let message = match attr("error_message").map(|a| &a.expr) {
                        Some(Expression::String(m)) => m.clone(),
                        _ => format!("the value of {name} is not valid"),
                    };
                    spec.validations.push((condition.expr.clone(), message));
                }
            }
            for attr in block.body.attributes() {
                match attr.key.as_str() {
                    "type" => {
                        spec.ty = parse_type(&attr.expr)
                            .map_err(|e| format!("variable {name}: type: {e}"))?
                    }
                    "default" => {
                        let value = attr
                            .expr
                            .evaluate(&Context::new())
                            .map_err(|e| format!("variable {name}: default: {e}"))?;
                        spec.default = Some(
                            serde_json::to_value(value)
                                .map_err(|e| format!("variable {name}: default: {e}"))?,
                        );
                    }
                    "description" => {
                        if let Expression::String(s) = &attr.expr {
                            spec.description = Some(s.clone());
                        }
                    }
                    _ => {}
                }
            }
            variables.push(spec);
        }
        Ok(StackVariables { variables })
    }
}

fn parse_type(expr: &Expression) -> Result<TfType, String> {
    match expr {
        Expression::Variable(v) => keyword_type(v.as_str()),
        // Terraform 0.11 quoted types: "string", "list", "map".
        Expression::String(s) => keyword_type(s),
        Expression::FuncCall(call) => {
            let arg = |i: usize| {
                call.args
                    .get(i)
                    .ok_or_else(|| format!("{}() needs an argument", call.name.name))
            };
            match call.name.name.as_str() {
                "list" => Ok(TfType::List(Box::new(parse_type(arg(0)?)?))),
                "set" => Ok(TfType::Set(Box::new(parse_type(arg(0)?)?))),
                "map" => Ok(TfType::Map(Box::new(parse_type(arg(0)?)?))),
                "tuple" => match arg(0)? {
                    Expression::Array(items) => Ok(TfType::Tuple(
                        items.iter().map(parse_type).collect::<Result<_, _>>()?,
                    )),
                    _ => Err("tuple() takes a list of types".into()),
                },
                "object" => match arg(0)? {
                    Expression::Object(attrs) => {
                        let mut fields = Vec::new();
                        for (key, ty) in attrs {
                            let key = match key {
                                ObjectKey::Identifier(id) => id.as_str().to_string(),
                                ObjectKey::Expression(Expression::String(s)) => s.clone(),
                                _ => return Err("object() attribute names must be names".into()),
                            };
                            fields.push((key, parse_type(ty)?));
                        }
                        Ok(TfType::Object(fields))
                    }
                    _ => Err("object() takes an object of types".into()),
                },
                // optional(T) inside object types: treat as T.
                "optional" => parse_type(arg(0)?),
                other => Err(format!("unsupported type constructor {other}()")),
            }
        }
        _ => Err("unsupported type expression".into()),
    }
}

fn keyword_type(word: &str) -> Result<TfType, String> {
    match word {
        "string" => Ok(TfType::String),
        "number" => Ok(TfType::Number),
        "bool" => Ok(TfType::Bool),
        "any" => Ok(TfType::Any),
        "list" => Ok(TfType::List(Box::new(TfType::Any))),
        "map" => Ok(TfType::Map(Box::new(TfType::Any))),
        other => Err(format!("unknown type {other}")),
    }
}

/// `[A-Za-z_][A-Za-z0-9_-]*`, the shape of a Terraform name.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const STACK: &str = r#"
variable "bastion_key_pair" {
  type        = string
  description = "Key pair of the bastion"
}
variable "replica_count" {
  type    = number
  default = 2
}
variable "ssh_allowed_cidrs" {
  type    = list(string)
  default = ["10.0.0.0/8"]
}
variable "tags" {
  type    = map(string)
  default = {}
}
variable "ami_id" {
  type    = string
  default = null
}
"#;

    #[test]
    fn variables_types_and_defaults_come_from_the_hcl() {
        let stack = StackVariables::parse(STACK).unwrap();
        let names: Vec<_> = stack.variables.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bastion_key_pair",
                "replica_count",
                "ssh_allowed_cidrs",
                "tags",
                "ami_id"
            ]
        );
        let key = stack.get("bastion_key_pair").unwrap();
        assert!(key.is_required());
        assert_eq!(key.description.as_deref(), Some("Key pair of the bastion"));
        assert_eq!(stack.get("replica_count").unwrap().default, Some(json!(2)));
        assert_eq!(
            stack.get("ssh_allowed_cidrs").unwrap().ty,
            TfType::List(Box::new(TfType::String))
        );
        // `default = null` makes a variable optional.
        assert_eq!(stack.get("ami_id").unwrap().default, Some(Value::Null));
    }
}
