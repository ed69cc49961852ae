//! Terraform variables: what the stack declares (read from its `*.tf` files
//! with an HCL parser) and the values a request may give them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::{Body, Expression, ObjectKey};
use serde_json::{Map, Number, Value};

/// The type constraint of a variable, as declared by `type = ...`.
#[derive(Clone, Debug, PartialEq)]
pub enum TfType {
    Any,
    String,
    Number,
    Bool,
    List(Box<TfType>),
    Set(Box<TfType>),
    Map(Box<TfType>),
    Tuple(Vec<TfType>),
    Object(Vec<(String, TfType)>),
}

/// One `variable` block of the stack.
#[derive(Clone, Debug)]
pub struct VariableSpec {
    pub name: String,
    pub ty: TfType,
    /// The default as JSON; `None` when the variable is required.
    pub default: Option<Value>,
    pub description: Option<String>,
    /// The `validation` blocks: condition and error message.
    pub validations: Vec<(Expression, String)>,
}

impl VariableSpec {
    pub fn is_required(&self) -> bool {
        self.default.is_none()
    }

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

/// The `*.tf` files directly in `dir`: `variables.tf` first, then the rest
/// by name (a stable declaration order).
fn stack_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read stack directory {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "tf") && path.is_file())
        .collect();
    files.sort_by_key(|p| (p.file_name() != Some("variables.tf".as_ref()), p.clone()));
    Ok(files)
}

/// What a stack file looked like when it was parsed.
type FileStamp = (PathBuf, u64, Option<SystemTime>);

/// A stack as parsed, and its files' stamps then.
type Parsed = (Vec<FileStamp>, Arc<StackVariables>);

/// Stacks parsed once and again only when one of their `*.tf` files is
/// added, removed or changed (size or modification time). Every `generate`
/// checks its variables against the stack; parsing it for each request was
/// about a quarter of the request's CPU.
#[derive(Default)]
pub struct StackCache {
    stacks: Mutex<HashMap<PathBuf, Parsed>>,
}

impl StackCache {
    /// The variables of the stack in `dir`, as `StackVariables::from_dir`.
    pub fn get(&self, dir: &Path) -> Result<Arc<StackVariables>, String> {
        let files = stack_files(dir)?;
        // Stamped before reading: a change made meanwhile is seen next time.
        let stamps: Vec<FileStamp> = files
            .iter()
            .map(|f| {
                let meta = std::fs::metadata(f).ok();
                let len = meta.as_ref().map_or(0, |m| m.len());
                (f.clone(), len, meta.and_then(|m| m.modified().ok()))
            })
            .collect();
        if let Some((seen, parsed)) = self.stacks.lock().unwrap().get(dir)
            && *seen == stamps
        {
            return Ok(parsed.clone());
        }
        let parsed = Arc::new(StackVariables::from_files(&files)?);
        self.stacks
            .lock()
            .unwrap()
            .insert(dir.to_path_buf(), (stamps, parsed.clone()));
        Ok(parsed)
    }
}

/// The variables a stack declares, in declaration order.
#[derive(Clone, Debug, Default)]
pub struct StackVariables {
    pub variables: Vec<VariableSpec>,
}

impl StackVariables {
    /// Reads every `variable` block of the `*.tf` files directly in `dir`.
    pub fn from_dir(dir: &Path) -> Result<StackVariables, String> {
        StackVariables::from_files(&stack_files(dir)?)
    }

    fn from_files(files: &[PathBuf]) -> Result<StackVariables, String> {
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

    pub fn get(&self, name: &str) -> Option<&VariableSpec> {
        self.variables.iter().find(|v| v.name == name)
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
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cached_stack_is_parsed_again_only_when_its_files_change() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("variables.tf", r#"variable "a" { type = string }"#);
        let cache = StackCache::default();
        let first = cache.get(dir.path()).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get(dir.path()).unwrap()));
        let names = |s: &StackVariables| -> Vec<String> {
            s.variables.iter().map(|v| v.name.clone()).collect()
        };
        assert_eq!(names(&first), ["a"]);

        write("variables.tf", r#"variable "ab" { type = string }"#);
        assert_eq!(names(&cache.get(dir.path()).unwrap()), ["ab"]);
        write("more.tf", r#"variable "c" { default = 1 }"#);
        assert_eq!(names(&cache.get(dir.path()).unwrap()), ["ab", "c"]);
        std::fs::remove_file(dir.path().join("more.tf")).unwrap();
        assert_eq!(names(&cache.get(dir.path()).unwrap()), ["ab"]);
        // A broken file is an error each time, not a stale answer.
        write("variables.tf", r#"variable "ab" {"#);
        assert!(cache.get(dir.path()).is_err());
        assert!(cache.get(dir.path()).is_err());
    }

    #[test]
    fn a_cached_regex_matches_as_a_fresh_one_and_a_bad_one_is_an_error() {
        let first = compiled("^[a-z]+$").unwrap();
        assert!(first.is_match("abc"));
        assert!(compiled("^[a-z]+$").unwrap().is_match("xyz"));
        assert!(compiled("(").is_err());
    }

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
