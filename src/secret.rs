//! Secret values and the redaction applied to every line a job prints.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A value that must never be printed: `Debug` and `Display` show a mask.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that hands it over (a pipe).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

/// Replaces every known secret value in a text with a mask.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<Secret>,
}

pub const MASK: &str = "********";

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = Secret>) -> Redactor {
        let mut secrets: Vec<Secret> = secrets
            .into_iter()
            .filter(|s| !s.expose().is_empty())
            .collect();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.expose().len()));
        Redactor { secrets }
    }

    /// This redactor with more secrets.
    pub fn with(&self, more: impl IntoIterator<Item = Secret>) -> Redactor {
        Redactor::new(self.secrets.iter().cloned().chain(more))
    }

    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            if out.contains(secret.expose()) {
                out = Cow::Owned(out.replace(secret.expose(), MASK));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?} {secret}").contains("hunter2"));
    }

    #[test]
    fn every_occurrence_of_every_secret_is_masked() {
        let redactor = Redactor::new([Secret::new("pw"), Secret::new("longer-pw")]);
        assert_eq!(
            redactor.redact("a pw, a longer-pw and pw again"),
            "a ********, a ******** and ******** again"
        );
    }

    #[test]
    fn a_line_without_secrets_is_not_copied() {
        let redactor = Redactor::new([Secret::new("pw")]);
        assert!(matches!(redactor.redact("clean"), Cow::Borrowed(_)));
    }
}
