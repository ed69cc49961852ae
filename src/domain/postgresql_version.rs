//! `PostgresqlVersion`: the major version the playbook installs.

use serde_json::Value;

/// An integer major version, 10 to 30.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostgresqlVersion(u8);

impl PostgresqlVersion {
    pub const DEFAULT: PostgresqlVersion = PostgresqlVersion(16);

    pub fn parse(raw: &Value) -> Result<PostgresqlVersion, String> {
        let number = match raw {
            Value::Number(n) => n.as_u64(),
            Value::String(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => {
                s.parse().ok()
            }
            _ => None,
        };
        match number {
            Some(v @ 10..=30) => Ok(PostgresqlVersion(v as u8)),
            _ => Err(format!(
                "must be an integer PostgreSQL major version between 10 and 30, got {raw}"
            )),
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_major_version_is_accepted_as_number_or_digits() {
        assert_eq!(PostgresqlVersion::parse(&json!(16)).unwrap().get(), 16);
        assert_eq!(PostgresqlVersion::parse(&json!("15")).unwrap().get(), 15);
    }

    #[test]
    fn shell_syntax_decimals_and_out_of_range_are_rejected() {
        for bad in [
            json!("16; rm -rf /"),
            json!("\"; rm -rf /"),
            json!(16.5),
            json!(9),
            json!(-1),
            json!(null),
        ] {
            assert!(PostgresqlVersion::parse(&bad).is_err(), "{bad}");
        }
    }
}
