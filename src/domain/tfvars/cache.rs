//! Stacks parsed once per change of their files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::StackVariables;
use super::parse::stack_files;

/// What a stack file looked like when it was parsed.
type FileStamp = (PathBuf, u64, Option<SystemTime>);

/// A stack as parsed, and its files' stamps then.
type Parsed = (Vec<FileStamp>, Arc<StackVariables>);

/// Stacks parsed once and again only when one of their `*.tf` files is
/// added, removed or changed (size or modification time). Every `generate`
/// checks its variables against the stack, and parsing it is a large part of
/// such a request's CPU.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
