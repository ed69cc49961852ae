//! `KeyPath`: an SSH private key file the inventory may point at.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// An existing regular file, readable by its owner only, whose path is safe
/// to write into `hosts.ini` and an ssh config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPath(PathBuf);

impl KeyPath {
    pub fn parse(raw: &str) -> Result<KeyPath, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        if let Some(c) = raw.chars().find(|c| !is_path_char(*c)) {
            return Err(format!(
                "contains {c:?}: only letters, digits and . _ - / @ + are allowed in a key path"
            ));
        }
        let path = Path::new(raw);
        if !path.is_absolute() {
            return Err("must be an absolute path".into());
        }
        let resolved = path
            .canonicalize()
            .map_err(|e| format!("cannot be opened: {e}"))?;
        // Kernel files (/proc/self/environ...) look like private regular files.
        if ["/proc", "/sys", "/dev"]
            .iter()
            .any(|dir| resolved.starts_with(dir))
        {
            return Err("is not a key file (it is under /proc, /sys or /dev)".into());
        }
        let meta = std::fs::metadata(&resolved).map_err(|e| format!("cannot be read: {e}"))?;
        if !meta.is_file() {
            return Err("is not a regular file".into());
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "is readable or writable by group or others (mode {:o}); chmod 600 it",
                meta.permissions().mode() & 0o777
            ));
        }
        if !looks_like_private_key(&resolved) {
            return Err(
                "is not an SSH private key (expected a file starting with -----BEGIN ... PRIVATE KEY-----)"
                    .into(),
            );
        }
        let resolved_text = resolved.to_string_lossy();
        if resolved_text.chars().any(|c| !is_path_char(c)) {
            return Err("resolves to a path with characters that are not allowed".into());
        }
        Ok(KeyPath(resolved))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("checked to be ASCII")
    }
}

/// The first line of a PEM or OpenSSH private key file.
fn looks_like_private_key(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 64];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let n = file.read(&mut head).unwrap_or(0);
    let first_line = head[..n].split(|b| *b == b'\n').next().unwrap_or_default();
    first_line.starts_with(b"-----BEGIN ") && first_line.ends_with(b"PRIVATE KEY-----")
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '@' | '+')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn key(mode: u32) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_ed25519");
        fs::write(&path, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let text = path.to_str().unwrap().to_string();
        (dir, text)
    }

    #[test]
    fn a_private_key_file_is_accepted() {
        let (_dir, path) = key(0o600);
        assert!(KeyPath::parse(&path).is_ok());
    }

    #[test]
    fn a_key_readable_by_others_is_rejected() {
        let (_dir, path) = key(0o644);
        assert!(KeyPath::parse(&path).unwrap_err().contains("chmod 600"));
    }

    #[test]
    fn a_file_that_is_not_a_private_key_is_rejected() {
        let (dir, _) = key(0o600);
        let public = dir.path().join("id_ed25519.pub");
        fs::write(&public, "ssh-ed25519 AAAA user@host\n").unwrap();
        fs::set_permissions(&public, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            KeyPath::parse(public.to_str().unwrap())
                .unwrap_err()
                .contains("private key")
        );
    }

    #[test]
    fn kernel_files_are_rejected_even_when_private() {
        assert!(KeyPath::parse("/proc/self/environ").is_err());
        assert!(KeyPath::parse("/proc/1/environ").is_err());
    }

    #[test]
    fn a_missing_file_is_rejected() {
        assert!(KeyPath::parse("/nonexistent/key").is_err());
    }

    #[test]
    fn a_directory_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(KeyPath::parse(dir.path().to_str().unwrap()).is_err());
    }

    #[test]
    fn a_path_with_a_space_newline_or_equals_is_rejected() {
        for bad in [
            "/tmp/a key",
            "/tmp/a\nb",
            "/tmp/a=b",
            "/tmp/a\"b",
            "relative/key",
        ] {
            assert!(KeyPath::parse(bad).is_err(), "{bad:?}");
        }
    }
}
