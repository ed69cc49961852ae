//! A variable's `validation` blocks, evaluated where they need only literals,
//! operators and a few pure functions.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use hcl::Expression;
use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use serde_json::Value;

use super::VariableSpec;

impl VariableSpec {
    /// Runs the variable's `validation` blocks that can be evaluated here
    /// (literals, operators and a few pure functions). A condition that needs
    /// more (`can`, `regex`, `file`, other variables) is left to Terraform,
    /// which checks every condition at plan time.
    pub fn validate(&self, value: &Value) -> Result<(), String> {
        if self.validations.is_empty() || value.is_null() {
            return Ok(());
        }
        let Ok(hcl_value) = serde_json::from_value::<hcl::Value>(value.clone()) else {
            return Ok(());
        };
        let mut var = hcl::Map::new();
        var.insert(self.name.clone(), hcl_value);
        let mut ctx = Context::new();
        ctx.declare_var("var", hcl::Value::Object(var));
        declare_functions(&mut ctx);
        for (condition, message) in &self.validations {
            let Some(condition) = resolve_can(condition, &ctx) else {
                continue;
            };
            if let Ok(hcl::Value::Bool(false)) = condition.evaluate(&ctx) {
                return Err(message.clone());
            }
        }
        Ok(())
    }
}

/// Replaces each `can(X)` by whether X evaluates (hcl evaluates function
/// arguments first, so `can` cannot be an ordinary function). `None` when X
/// needs something this evaluator lacks (a function it does not have, a
/// variable out of scope): the condition is then Terraform's to judge.
fn resolve_can(expr: &Expression, ctx: &Context<'_>) -> Option<Expression> {
    use hcl::eval::ErrorKind;
    use hcl::expr::{BinaryOp, Conditional, FuncCall, Operation, UnaryOp};
    Some(match expr {
        Expression::FuncCall(call) if call.name.name.as_str() == "can" && call.args.len() == 1 => {
            let inner = resolve_can(&call.args[0], ctx)?;
            match inner.evaluate(ctx) {
                Ok(_) => Expression::Bool(true),
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::UndefinedFunc(_) | ErrorKind::UndefinedVar(_)
                    ) =>
                {
                    return None;
                }
                Err(_) => Expression::Bool(false),
            }
        }
        Expression::FuncCall(call) => {
            let mut call: FuncCall = (**call).clone();
            call.args = call
                .args
                .iter()
                .map(|a| resolve_can(a, ctx))
                .collect::<Option<_>>()?;
            Expression::FuncCall(Box::new(call))
        }
        Expression::Parenthesis(inner) => {
            Expression::Parenthesis(Box::new(resolve_can(inner, ctx)?))
        }
        Expression::Operation(op) => Expression::Operation(Box::new(match &**op {
            Operation::Unary(u) => Operation::Unary(UnaryOp {
                operator: u.operator,
                expr: resolve_can(&u.expr, ctx)?,
            }),
            Operation::Binary(b) => Operation::Binary(BinaryOp {
                lhs_expr: resolve_can(&b.lhs_expr, ctx)?,
                operator: b.operator,
                rhs_expr: resolve_can(&b.rhs_expr, ctx)?,
            }),
        })),
        Expression::Conditional(c) => Expression::Conditional(Box::new(Conditional {
            cond_expr: resolve_can(&c.cond_expr, ctx)?,
            true_expr: resolve_can(&c.true_expr, ctx)?,
            false_expr: resolve_can(&c.false_expr, ctx)?,
        })),
        Expression::Array(items) => Expression::Array(
            items
                .iter()
                .map(|i| resolve_can(i, ctx))
                .collect::<Option<_>>()?,
        ),
        // A `can` inside a `for` needs the loop variable: leave it to Terraform.
        Expression::ForExpr(_) if format!("{expr:?}").contains("\"can\"") => return None,
        other => other.clone(),
    })
}

/// Pure Terraform functions that validation conditions commonly use.
fn declare_functions(ctx: &mut Context<'_>) {
    fn number(args: &FuncArgs, i: usize) -> Result<f64, String> {
        args[i]
            .as_number()
            .and_then(|n| n.as_f64())
            .ok_or_else(|| "expected a number".to_string())
    }
    fn to_value(f: f64) -> Result<hcl::Value, String> {
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            Ok(hcl::Value::from(f as i64))
        } else {
            hcl::Number::from_f64(f)
                .map(hcl::Value::Number)
                .ok_or_else(|| "not a finite number".to_string())
        }
    }
    let num = |f: fn(FuncArgs) -> Result<hcl::Value, String>| {
        FuncDef::builder().param(ParamType::Number).build(f)
    };
    ctx.declare_func("floor", num(|a| to_value(number(&a, 0)?.floor())));
    ctx.declare_func("ceil", num(|a| to_value(number(&a, 0)?.ceil())));
    ctx.declare_func("abs", num(|a| to_value(number(&a, 0)?.abs())));
    ctx.declare_func(
        "length",
        FuncDef::builder()
            .param(ParamType::Any)
            .build(|a| match &a[0] {
                hcl::Value::Array(items) => Ok(hcl::Value::from(items.len() as u64)),
                hcl::Value::Object(map) => Ok(hcl::Value::from(map.len() as u64)),
                hcl::Value::String(s) => Ok(hcl::Value::from(s.chars().count() as u64)),
                _ => Err("length() needs a collection or a string".into()),
            }),
    );
    fn booleans(a: &FuncArgs) -> Result<Vec<bool>, String> {
        let hcl::Value::Array(items) = &a[0] else {
            return Err("expected a list".into());
        };
        items
            .iter()
            .map(|v| v.as_bool().ok_or_else(|| "expected booleans".to_string()))
            .collect()
    }
    ctx.declare_func(
        "alltrue",
        FuncDef::builder()
            .param(ParamType::Any)
            .build(|a| Ok(hcl::Value::Bool(booleans(&a)?.iter().all(|b| *b)))),
    );
    ctx.declare_func(
        "anytrue",
        FuncDef::builder()
            .param(ParamType::Any)
            .build(|a| Ok(hcl::Value::Bool(booleans(&a)?.iter().any(|b| *b)))),
    );
    ctx.declare_func(
        "regex",
        FuncDef::builder()
            .params([ParamType::String, ParamType::String])
            .build(|a| {
                let (Some(pattern), Some(text)) = (a[0].as_str(), a[1].as_str()) else {
                    return Err("regex() takes two strings".into());
                };
                compiled(pattern)?
                    .find(text)
                    .map(|m| hcl::Value::from(m.as_str()))
                    .ok_or_else(|| "no match".to_string())
            }),
    );
    ctx.declare_func(
        "lower",
        FuncDef::builder().param(ParamType::String).build(|a| {
            Ok(hcl::Value::from(
                a[0].as_str().unwrap_or_default().to_lowercase(),
            ))
        }),
    );
    ctx.declare_func(
        "contains",
        FuncDef::builder()
            .params([ParamType::Any, ParamType::Any])
            .build(|a| match &a[0] {
                hcl::Value::Array(items) => Ok(hcl::Value::Bool(items.contains(&a[1]))),
                _ => Err("contains() needs a list".into()),
            }),
    );
}

/// `pattern` compiled, once per pattern: the validations of a stack run at
/// every `generate`, and compiling a regex costs more than matching it.
fn compiled(pattern: &str) -> Result<regex::Regex, String> {
    static COMPILED: OnceLock<Mutex<HashMap<String, regex::Regex>>> = OnceLock::new();
    let mut compiled = COMPILED.get_or_init(Mutex::default).lock().unwrap();
    if let Some(re) = compiled.get(pattern) {
        return Ok(re.clone());
    }
    let re = regex::Regex::new(pattern).map_err(|e| e.to_string())?;
    // Patterns come from the stacks' files: few, unless the files keep changing.
    if compiled.len() >= 256 {
        compiled.clear();
    }
    compiled.insert(pattern.to_string(), re.clone());
    Ok(re)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::tfvars::StackVariables;

    #[test]
    fn a_cached_regex_matches_as_a_fresh_one_and_a_bad_one_is_an_error() {
        let first = compiled("^[a-z]+$").unwrap();
        assert!(first.is_match("abc"));
        assert!(compiled("^[a-z]+$").unwrap().is_match("xyz"));
        assert!(compiled("(").is_err());
    }
    const VALIDATED: &str = r#"
variable "replica_count" {
  type = number
  validation {
    condition     = var.replica_count >= 0 && var.replica_count <= 8 && floor(var.replica_count) == var.replica_count
    error_message = "The replica_count value must be a whole number between 0 and 8."
  }
}
variable "cidrs" {
  type = list(string)
  validation {
    condition     = length(var.cidrs) > 0 && alltrue([for c in var.cidrs : can(cidrhost(c, 0))])
    error_message = "Needs CIDRs."
  }
}
"#;

    #[test]
    fn a_validation_block_rejects_out_of_range_values_with_its_message() {
        let stack = StackVariables::parse(VALIDATED).unwrap();
        let count = stack.get("replica_count").unwrap();
        for bad in [json!(-1), json!(2.5), json!(9), json!(1e23)] {
            assert_eq!(
                count.validate(&bad).unwrap_err(),
                "The replica_count value must be a whole number between 0 and 8.",
                "{bad}"
            );
        }
        assert!(count.validate(&json!(3)).is_ok());
    }

    #[test]
    fn can_and_regex_conditions_are_evaluated() {
        let stack = StackVariables::parse(
            r#"
variable "environment" {
  type = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.environment))
    error_message = "Lowercase, please."
  }
}
"#,
        )
        .unwrap();
        let env = stack.get("environment").unwrap();
        assert!(env.validate(&json!("staging")).is_ok());
        for bad in ["Staging", "; rm -rf /", "a b", "$(id)"] {
            assert_eq!(
                env.validate(&json!(bad)).unwrap_err(),
                "Lowercase, please.",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_condition_needing_functions_terraform_alone_has_is_left_to_terraform() {
        let stack = StackVariables::parse(VALIDATED).unwrap();
        // can() and cidrhost() are not evaluated here: no verdict, no error.
        assert!(stack.get("cidrs").unwrap().validate(&json!(["x"])).is_ok());
    }
}
