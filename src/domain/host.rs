//! `HostAddress`: an address read from terraform's outputs, before it goes
//! into the inventory and the ssh config.

use std::net::IpAddr;

/// An IP address or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAddress(String);

impl HostAddress {
    pub fn parse(raw: &str) -> Result<HostAddress, String> {
        if raw.parse::<IpAddr>().is_ok() {
            return Ok(HostAddress(raw.to_string()));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if raw.len() <= 253 && raw.split('.').all(label_ok) {
            Ok(HostAddress(raw.to_ascii_lowercase()))
        } else {
            Err(format!("{raw:?} is not an IP address or a host name"))
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
    fn ips_and_names_are_accepted() {
        for ok in ["10.0.1.5", "::1", "db-1.internal.example"] {
            assert!(HostAddress::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn an_address_carrying_inventory_syntax_is_rejected() {
        for bad in [
            "10.0.0.1 ansible_user=evil",
            "a\nb",
            "",
            "-oProxyCommand=x",
            "a=b",
        ] {
            assert!(HostAddress::parse(bad).is_err(), "{bad:?}");
        }
    }
}
