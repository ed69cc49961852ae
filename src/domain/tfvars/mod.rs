//! Terraform variables: what the stack declares (read from its `*.tf` files
//! with an HCL parser) and the values a request may give them.
//!
//! `parse` reads the declarations, `cache` keeps them per stack, `conform`
//! checks a request's values against their types, `validation` runs their
//! `validation` blocks and `encode` writes values as HCL.

mod cache;
mod conform;
mod encode;
mod parse;
mod validation;

pub use cache::StackCache;
pub use conform::conform;
pub use encode::to_hcl;
pub use parse::is_identifier;

use hcl::Expression;
use serde_json::Value;

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
}

/// The variables a stack declares, in declaration order.
#[derive(Clone, Debug, Default)]
pub struct StackVariables {
    pub variables: Vec<VariableSpec>,
}

impl StackVariables {
    pub fn get(&self, name: &str) -> Option<&VariableSpec> {
        self.variables.iter().find(|v| v.name == name)
    }
}
