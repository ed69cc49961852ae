//! The disks under `DATA_DIR` and `LOG_DIR`: how much room is left, whether
//! a write really lands, and which I/O errors are faults of the disk (full,
//! read-only, failing) rather than of the server.

use std::io::Write;
use std::path::Path;

/// A fault of the storage itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageFault {
    /// No space left (or the quota is used up).
    NoSpace,
    /// The filesystem is mounted read-only.
    ReadOnly,
    /// The device failed a read or a write.
    Io,
}

impl StorageFault {
    pub fn describe(self) -> &'static str {
        match self {
            StorageFault::NoSpace => "no space left on device",
            StorageFault::ReadOnly => "read-only file system",
            StorageFault::Io => "input/output error",
        }
    }

    /// The storage fault an I/O error reports, if it is one.
    pub fn of_io(err: &std::io::Error) -> Option<StorageFault> {
        use std::io::ErrorKind;
        match err.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Some(StorageFault::NoSpace),
            ErrorKind::ReadOnlyFilesystem => Some(StorageFault::ReadOnly),
            _ if err.raw_os_error() == Some(nix::libc::EIO) => Some(StorageFault::Io),
            _ => None,
        }
    }
}

/// Room on the filesystem holding a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still use.
    pub free: u64,
    pub total: u64,
}

impl Space {
    pub fn of(dir: &Path) -> std::io::Result<Space> {
        let stat = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
        let unit = stat.fragment_size() as u64;
        Ok(Space {
            free: stat.blocks_available() as u64 * unit,
            total: stat.blocks() as u64 * unit,
        })
    }

    /// The least free space the server wants before it starts a run:
    /// `configured`, or by default the smaller of 1% of the filesystem and
    /// 256 MiB.
    pub fn minimum(&self, configured: Option<u64>) -> u64 {
        configured.unwrap_or_else(|| (self.total / 100).min(256 << 20))
    }
}

/// Writes, syncs and removes a small file in `dir`: proof that a write
/// lands there now, which a permission check is not.
pub fn probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(".probe");
    let written = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(b"probe\n")?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    written
}

/// Whether `dir` can take a write now: the probe lands and the free space is
/// at least the minimum. The error names the cause and the directory.
pub fn check_writable(key: &str, dir: &Path, min_free: Option<u64>) -> Result<Space, String> {
    let at = |cause: &str| format!("{cause} under {key} {}", dir.display());
    let space = Space::of(dir).map_err(|e| at(&e.to_string()))?;
    let minimum = space.minimum(min_free);
    if space.free < minimum {
        return Err(format!(
            "{} ({} free, below the {} the server keeps)",
            at(StorageFault::NoSpace.describe()),
            human(space.free),
            human(minimum)
        ));
    }
    probe(dir).map_err(|e| match StorageFault::of_io(&e) {
        Some(fault) => at(fault.describe()),
        None => at(&format!("cannot write: {e}")),
    })?;
    Ok(space)
}

/// Bytes as people read them.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_and_a_read_only_one_are_storage_faults_and_a_missing_file_is_not() {
        let full = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
        assert_eq!(StorageFault::of_io(&full), Some(StorageFault::NoSpace));
        let read_only = std::io::Error::from_raw_os_error(nix::libc::EROFS);
        assert_eq!(
            StorageFault::of_io(&read_only),
            Some(StorageFault::ReadOnly)
        );
        let failing = std::io::Error::from_raw_os_error(nix::libc::EIO);
        assert_eq!(StorageFault::of_io(&failing), Some(StorageFault::Io));
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(StorageFault::of_io(&missing), None);
    }

    #[test]
    fn the_default_minimum_is_one_percent_or_256_mib_whichever_is_smaller() {
        let small = Space {
            free: 0,
            total: 1 << 30,
        };
        assert_eq!(small.minimum(None), (1 << 30) / 100);
        let large = Space {
            free: 0,
            total: 1 << 40,
        };
        assert_eq!(large.minimum(None), 256 << 20);
        assert_eq!(large.minimum(Some(5)), 5);
    }

    #[test]
    fn a_writable_directory_passes_and_leaves_no_probe_behind() {
        let dir = tempfile::tempdir().unwrap();
        let space = check_writable("DATA_DIR", dir.path(), Some(0)).unwrap();
        assert!(space.total > 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let refused = check_writable("DATA_DIR", dir.path(), Some(u64::MAX)).unwrap_err();
        assert!(
            refused.starts_with("no space left on device under DATA_DIR "),
            "{refused}"
        );
    }

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(256 << 20), "256.0 MiB");
    }
}
