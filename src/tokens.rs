//! API tokens: scopes, the configured tokens (`API_TOKENS`) and the caller
//! they prove. Only SHA-256 hashes of tokens are configured; a presented token
//! is hashed and compared with every configured hash in constant time.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// What a token may do. Each scope includes the ones below it:
/// `admin` ⊃ `apply` ⊃ `plan` ⊃ `read`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Look at jobs, logs and terraform outputs.
    Read,
    /// Write files and run what changes nothing remote: generate, init, plan, configure.
    Plan,
    /// Change the infrastructure: apply, run the playbook, cancel jobs.
    Apply,
    /// Destroy, delete workspaces, and every route that declares nothing.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Plan, Scope::Apply, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Plan => "plan",
            Scope::Apply => "apply",
            Scope::Admin => "admin",
        }
    }

    /// Whether a holder of this scope may use a route needing `required`.
    pub fn allows(self, required: Scope) -> bool {
        self >= required
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| "scope must be read, plan, apply or admin".to_string())
    }
}

/// Who made a request; in the request's extensions on every route that needs a scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's name in `API_TOKENS`, or `anonymous` when authentication is off.
    pub name: String,
    pub scope: Scope,
    /// Whether a token proved it (false for the anonymous caller).
    pub authenticated: bool,
}

impl Principal {
    /// Everyone, when no token is configured.
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".into(),
            scope: Scope::Admin,
            authenticated: false,
        }
    }

    /// Sensitive values (terraform outputs marked sensitive) are shown only
    /// to a caller that proved it holds an admin token.
    pub fn may_see_secrets(&self) -> bool {
        self.authenticated && self.scope == Scope::Admin
    }
}

/// SHA-256 of a token. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// One `API_TOKENS` entry: `name:scope:sha256:<64 hex digits>`.
#[derive(Clone, Debug)]
pub struct TokenEntry {
    pub name: String,
    pub scope: Scope,
    pub hash: TokenHash,
}

impl TokenEntry {
    /// The entry for a new token.
    pub fn for_token(name: &str, scope: Scope, token: &str) -> TokenEntry {
        TokenEntry {
            name: name.to_string(),
            scope,
            hash: TokenHash::of(token),
        }
    }

    /// The text to put in `API_TOKENS`.
    pub fn config_entry(&self) -> String {
        format!("{}:{}:sha256:{}", self.name, self.scope, self.hash.to_hex())
    }

    /// Parses one entry. The error never repeats the entry, which may be a
    /// token pasted by mistake; it names the token when the name is valid.
    fn parse(text: &str) -> Result<TokenEntry, (Option<String>, String)> {
        let parts: Vec<&str> = text.split(':').collect();
        let name = parts[0].trim();
        // A lone word may be a token pasted by mistake: name it only in a
        // four-part entry.
        let shown = (parts.len() == 4 && check_name(name).is_ok()).then(|| name.to_string());
        let fail = |reason: &str| (shown.clone(), reason.to_string());
        let [_, scope, algorithm, digest] = parts[..] else {
            return Err(fail("expected name:scope:sha256:<64 hex digits>"));
        };
        check_name(name).map_err(|reason| fail(&reason))?;
        let scope: Scope = scope
            .trim()
            .parse()
            .map_err(|reason: String| fail(&reason))?;
        if algorithm.trim() != "sha256" {
            return Err(fail("the hash must be sha256:<64 hex digits>"));
        }
        let bytes: [u8; 32] = hex::decode(digest.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| fail("the hash must be 64 hex digits (the SHA-256 of the token)"))?;
        Ok(TokenEntry {
            name: name.to_string(),
            scope,
            hash: TokenHash(bytes),
        })
    }
}

/// A token name: 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err("the name must be 1 to 64 letters, digits, '-', '_' or '.'".into())
    }
}

/// The tokens of `API_TOKENS`. Empty means authentication is off.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|e| format!("{}:{}", e.name, e.scope)),
            )
            .finish()
    }
}

impl Tokens {
    /// Parses `API_TOKENS` (comma-separated entries); every bad entry is one
    /// problem naming its position and, when readable, its name.
    pub fn parse(raw: &str) -> Result<Tokens, Vec<String>> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        let mut problems = Vec::new();
        let texts = raw.split(',').map(str::trim).filter(|t| !t.is_empty());
        for (i, text) in texts.enumerate() {
            let position = i + 1;
            match TokenEntry::parse(text) {
                Ok(entry) => {
                    if let Some(other) = entries.iter().find(|e| e.name == entry.name) {
                        problems.push(format!(
                            "API_TOKENS: entry {position} ({}): the name is already used by another entry",
                            other.name
                        ));
                    } else if let Some(other) = entries.iter().find(|e| e.hash == entry.hash) {
                        problems.push(format!(
                            "API_TOKENS: entry {position} ({}): same token hash as entry '{}'",
                            entry.name, other.name
                        ));
                    } else {
                        entries.push(entry);
                    }
                }
                Err((Some(name), reason)) => {
                    problems.push(format!("API_TOKENS: entry {position} ({name}): {reason}"))
                }
                Err((None, reason)) => {
                    problems.push(format!("API_TOKENS: entry {position}: {reason}"))
                }
            }
        }
        if problems.is_empty() {
            Ok(Tokens { entries })
        } else {
            Err(problems)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The principal of a presented token. Every configured hash is compared,
    /// in constant time, whether or not an earlier one matched.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let presented = TokenHash::of(token);
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, entry) in self.entries.iter().enumerate() {
            let equal = entry.hash.0[..].ct_eq(&presented.0[..]);
            index.conditional_assign(&(i as u32), equal & !found);
            found |= equal;
        }
        bool::from(found).then(|| {
            let entry = &self.entries[index as usize];
            Principal {
                name: entry.name.clone(),
                scope: entry.scope,
                authenticated: true,
            }
        })
    }
}

/// Prefix of every token this server hands out.
pub const TOKEN_PREFIX: &str = "pgc_";

/// A new token: `pgc_` and 43 characters of URL-safe base64 (32 random bytes
/// from the operating system).
pub fn generate_token() -> Result<String, rand::rngs::SysError> {
    use rand::TryRng;
    let mut bytes = [0u8; 32];
    rand::rngs::SysRng.try_fill_bytes(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", base64url(&bytes)))
}

/// Unpadded URL-safe base64 (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, scope: &str, token: &str) -> String {
        format!("{name}:{scope}:sha256:{}", TokenHash::of(token).to_hex())
    }

    #[test]
    fn scopes_include_the_ones_below_them() {
        assert!(Scope::Admin.allows(Scope::Read));
        assert!(Scope::Apply.allows(Scope::Plan));
        assert!(Scope::Plan.allows(Scope::Plan));
        assert!(!Scope::Plan.allows(Scope::Apply));
        assert!(!Scope::Read.allows(Scope::Plan));
        assert!(!Scope::Apply.allows(Scope::Admin));
    }

    #[test]
    fn serialized_scopes_are_their_names() {
        for scope in Scope::ALL {
            assert_eq!(serde_json::to_value(scope).unwrap(), scope.as_str());
        }
    }

    #[test]
    fn valid_entries_are_parsed() {
        let raw = format!(
            " {} , {},",
            entry("ci", "apply", "pgc_one"),
            entry("viewer.1", "read", "pgc_two")
        );
        let tokens = Tokens::parse(&raw).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(
            tokens.authenticate("pgc_two"),
            Some(Principal {
                name: "viewer.1".into(),
                scope: Scope::Read,
                authenticated: true,
            })
        );
    }

    #[test]
    fn an_empty_value_means_no_tokens() {
        assert!(Tokens::parse("").unwrap().is_empty());
        assert!(Tokens::parse(" , ").unwrap().is_empty());
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let raw = entry("ci", "plan", "pgc_x").to_uppercase().replacen(
            "CI:PLAN:SHA256",
            "ci:plan:sha256",
            1,
        );
        assert!(Tokens::parse(&raw).unwrap().authenticate("pgc_x").is_some());
    }

    #[test]
    fn every_bad_entry_is_named_by_position_and_name() {
        let good = entry("ok", "read", "pgc_ok");
        let raw = format!(
            "{good},ci:write:sha256:{},deploy:apply:md5:00,short:plan:sha256:abc,pgc_pastedtoken,bad name:read:sha256:{}",
            "a".repeat(64),
            "b".repeat(64)
        );
        let problems = Tokens::parse(&raw).unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(
            problems[0].starts_with("API_TOKENS: entry 2 (ci): scope"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].starts_with("API_TOKENS: entry 3 (deploy):"),
            "{}",
            problems[1]
        );
        assert!(
            problems[2].starts_with("API_TOKENS: entry 4 (short):"),
            "{}",
            problems[2]
        );
        assert!(
            problems[3].starts_with("API_TOKENS: entry 5: expected"),
            "{}",
            problems[3]
        );
        assert!(
            problems[4].starts_with("API_TOKENS: entry 6: the name"),
            "{}",
            problems[4]
        );
    }

    #[test]
    fn a_bad_entry_is_never_repeated_in_the_problem() {
        let problems = Tokens::parse("pgc_SECRETSECRETSECRET").unwrap_err();
        assert!(!problems[0].contains("SECRET"), "{}", problems[0]);
        let problems = Tokens::parse(&format!("ci:read:sha256:{}", "f".repeat(63))).unwrap_err();
        assert!(!problems[0].contains("fff"), "{}", problems[0]);
    }

    #[test]
    fn duplicate_names_and_hashes_are_rejected() {
        let raw = format!("{},{}", entry("a", "read", "t1"), entry("a", "plan", "t2"));
        assert!(Tokens::parse(&raw).unwrap_err()[0].contains("entry 2 (a)"));
        let raw = format!("{},{}", entry("a", "read", "t1"), entry("b", "plan", "t1"));
        assert!(Tokens::parse(&raw).unwrap_err()[0].contains("entry 2 (b)"));
    }

    #[test]
    fn a_token_not_configured_is_not_authenticated() {
        let tokens = Tokens::parse(&entry("ci", "admin", "pgc_right")).unwrap();
        assert_eq!(tokens.authenticate("pgc_wrong"), None);
        assert_eq!(tokens.authenticate(""), None);
        assert_eq!(Tokens::default().authenticate("pgc_right"), None);
    }

    #[test]
    fn debug_output_shows_no_hash() {
        let tokens = Tokens::parse(&entry("ci", "apply", "pgc_t")).unwrap();
        let hex = TokenHash::of("pgc_t").to_hex();
        for text in [
            format!("{tokens:?}"),
            format!("{:?}", TokenHash::of("pgc_t")),
        ] {
            assert!(!text.contains(&hex[..8]), "{text}");
        }
        assert_eq!(format!("{tokens:?}"), r#"["ci:apply"]"#);
    }

    #[test]
    fn a_generated_token_has_the_prefix_and_43_url_safe_characters() {
        let token = generate_token().unwrap();
        let body = token.strip_prefix("pgc_").unwrap();
        assert_eq!(body.len(), 43);
        assert!(
            body.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(token, generate_token().unwrap());
    }

    #[test]
    fn base64url_matches_rfc_4648() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), expected);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn a_created_entry_authenticates_its_token() {
        let token = generate_token().unwrap();
        let line = TokenEntry::for_token("ci", Scope::Plan, &token).config_entry();
        let tokens = Tokens::parse(&line).unwrap();
        assert_eq!(tokens.authenticate(&token).unwrap().scope, Scope::Plan);
    }
}
