//! `WorkspaceName`: the name of an environment (staging, prod, ...).

/// Lowercase letters, digits and `-`, starting with a letter, at most 32:
/// safe as a directory name and in a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceName(String);

impl WorkspaceName {
    pub fn parse(raw: &str) -> Result<WorkspaceName, String> {
        let mut chars = raw.chars();
        let valid = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && raw.len() <= 32
            && !raw.ends_with('-');
        if valid {
            Ok(WorkspaceName(raw.to_string()))
        } else {
            Err("must be 1-32 lowercase letters, digits or '-', starting with a letter".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names_are_accepted() {
        for ok in ["default", "staging", "prod-eu-1"] {
            assert!(WorkspaceName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_workspace_name_with_a_slash_dots_or_capitals_is_rejected() {
        for bad in [
            "../etc",
            "a/b",
            ".",
            "..",
            "Prod",
            "",
            "1abc",
            "a-",
            "x".repeat(33).as_str(),
            "a b",
        ] {
            assert!(WorkspaceName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
