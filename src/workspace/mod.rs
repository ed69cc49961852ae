//! A workspace: one environment's files under `DATA_DIR/workspaces/<name>/`.
//!
//! ```text
//! terraform/          copy of the stack + terraform.tfvars, state, .terraform/
//! plans/              saved plans, `latest` names the one apply will use
//! ansible/            hosts.ini, ansible.cfg, ssh_config, postgresql.yml, known_hosts
//! ```
//! Terraform runs in the workspace's copy of the stack, so workspaces never
//! share state or plans, and the stack directory stays clean.

mod lock;

pub use lock::{Holder, LockGuard, WorkspaceLocks};

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The paths of one workspace.
#[derive(Clone, Debug)]
pub struct Workspace {
    name: String,
    root: PathBuf,
}

/// A saved plan and the digest of the tfvars it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedPlan {
    pub path: PathBuf,
    pub tfvars_sha256: String,
}

/// Files of a stack directory never copied into (or removed from) a workspace.
const STACK_EXCLUDES: [&str; 6] = [
    ".terraform",
    "terraform.tfstate",
    "terraform.tfstate.backup",
    "terraform.tfvars",
    ".terraform.tfstate.lock.info",
    ".terraform.lock.hcl",
];

impl Workspace {
    /// `data_dir` must be absolute: the tools run in other directories.
    pub fn new(data_dir: &Path, name: &str) -> Workspace {
        Workspace {
            name: name.to_string(),
            root: data_dir.join("workspaces").join(name),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the workspace was created (`default` always exists).
    pub fn exists(&self) -> bool {
        self.is_default() || self.root.join(META).is_file()
    }

    /// `default`: made on first use, never created or removed by a request.
    fn is_default(&self) -> bool {
        self.name == DEFAULT
    }

    /// The stack this workspace runs, by name (a directory next to
    /// `TERRAFORM_DIR`); `None` means `TERRAFORM_DIR` itself.
    pub fn stack(&self) -> Option<String> {
        let text = fs::read_to_string(self.root.join(META)).ok()?;
        let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
        meta["stack"].as_str().map(String::from)
    }

    /// Records a new workspace and its stack. Directories a request racing
    /// the removal of an earlier workspace of this name left go first.
    pub fn create(&self, stack: &str) -> io::Result<()> {
        if self.root.exists() && !self.root.join(META).is_file() {
            self.remove()?;
        }
        fs::create_dir_all(&self.root)?;
        self.ensure()?;
        let meta = serde_json::json!({
            "name": self.name,
            "stack": stack,
            "created_at": time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        });
        write_atomic(&self.root.join(META), meta.to_string().as_bytes())
    }

    /// How many resources the workspace's state holds (local state file).
    pub fn resource_count(&self) -> usize {
        let Ok(text) = fs::read_to_string(self.terraform_dir().join("terraform.tfstate")) else {
            return 0;
        };
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|state| state["resources"].as_array().map(Vec::len))
            .unwrap_or(0)
    }

    /// Removes the workspace's files. The directory is first renamed out of
    /// the way, at once: a request that creates directories in the workspace
    /// at the same moment (it passed the existence check just before) then
    /// cannot make the removal fail half-way, and what it creates is no
    /// workspace (no `workspace.json`).
    pub fn remove(&self) -> io::Result<()> {
        let parent = self.root.parent().unwrap_or(&self.root);
        let removed = parent.join(format!(".removed-{}-{}", self.name, uuid::Uuid::new_v4()));
        fs::rename(&self.root, &removed)?;
        fs::remove_dir_all(&removed)
    }

    pub fn terraform_dir(&self) -> PathBuf {
        self.root.join("terraform")
    }

    pub fn tfvars(&self) -> PathBuf {
        self.terraform_dir().join("terraform.tfvars")
    }

    pub fn plans_dir(&self) -> PathBuf {
        self.root.join("plans")
    }

    pub fn ansible_dir(&self) -> PathBuf {
        self.root.join("ansible")
    }

    /// The plan file a plan job writes.
    pub fn plan_file(&self, job: &str) -> PathBuf {
        self.plans_dir().join(format!("{job}.tfplan"))
    }

    /// The saved plan `apply` would apply, if any.
    pub fn latest_plan(&self) -> Option<SavedPlan> {
        let marker = fs::read_to_string(self.plans_dir().join("latest")).ok()?;
        let mut lines = marker.lines();
        let path = self.plans_dir().join(lines.next()?.trim());
        let tfvars_sha256 = lines.next().unwrap_or_default().trim().to_string();
        path.is_file().then_some(SavedPlan {
            path,
            tfvars_sha256,
        })
    }

    /// Records `plan` as the one to apply, made from the tfvars whose digest
    /// is `tfvars_sha256`.
    pub fn set_latest_plan(&self, plan: &Path, tfvars_sha256: &str) -> io::Result<()> {
        let name = plan
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other("plan path has no file name"))?;
        // A marker, not data: after a crash the worst case is "plan again",
        // so it is renamed into place without an fsync (kept off apply's path).
        replace(
            &self.plans_dir().join("latest"),
            format!("{name}\n{tfvars_sha256}\n").as_bytes(),
        )
    }

    /// The SHA-256 of `terraform.tfvars` in hex, or `none` without one.
    pub fn tfvars_sha256(&self) -> String {
        use sha2::Digest;
        match fs::read(self.tfvars()) {
            Ok(bytes) => hex::encode(sha2::Sha256::digest(&bytes)),
            Err(_) => "none".to_string(),
        }
    }

    /// Forgets the saved plan (after apply consumed it, or the inputs changed).
    pub fn clear_latest_plan(&self) {
        if let Some(plan) = self.latest_plan() {
            let _ = fs::remove_file(plan.path);
        }
        let _ = fs::remove_file(self.plans_dir().join("latest"));
    }

    /// Creates the workspace directories; the workspace is private to the
    /// server's user (state files hold sensitive outputs in clear). Only
    /// `default` is created here when missing: another workspace's root comes
    /// from `create`, and when it is gone (removed since the request checked
    /// it) this fails with `NotFound` instead of leaving empty directories.
    pub fn ensure(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if self.is_default() {
            fs::create_dir_all(&self.root)?;
        }
        for dir in [self.terraform_dir(), self.plans_dir(), self.ansible_dir()] {
            make_dir(&dir)?;
        }
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
    }

    /// Mirrors the stack's files into the workspace's terraform directory:
    /// new and changed files are copied, `.tf` files the stack no longer has
    /// are removed; state, tfvars and `.terraform/` are left alone.
    pub fn sync_stack(&self, stack: &Path) -> io::Result<()> {
        self.ensure()?;
        let target = self.terraform_dir();
        let manifest_path = target.join(MANIFEST);
        let previous = fs::read_to_string(&manifest_path).unwrap_or_default();
        let mut copied = Vec::new();
        mirror(stack, &target, Path::new(""), &mut copied)?;
        // Files the stack had last time and has no more (another stack, a
        // removed file) go too.
        for old in previous.lines().filter(|l| !l.is_empty()) {
            if !copied.iter().any(|c| c == old) {
                let _ = fs::remove_file(target.join(old));
            }
        }
        let manifest = copied.join("\n") + "\n";
        if manifest == previous {
            // Nothing to write (and no fsync on every plan).
            return Ok(());
        }
        write_atomic(&manifest_path, manifest.as_bytes())
    }
}

/// The workspace that exists without being created (the original routes'
/// one).
pub const DEFAULT: &str = "default";

/// The workspace's own record: its name and stack.
const META: &str = "workspace.json";

/// Lists the files copied from the stack, to remove them when they go.
const MANIFEST: &str = ".pgcluster-stack-files";

fn mirror(from: &Path, to: &Path, relative: &Path, copied: &mut Vec<String>) -> io::Result<()> {
    make_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if STACK_EXCLUDES.iter().any(|x| name == *x) || name.to_string_lossy().ends_with(".tfplan")
        {
            continue;
        }
        let kind = entry.file_type()?;
        let target = to.join(&name);
        if kind.is_dir() {
            mirror(&entry.path(), &target, &relative.join(&name), copied)?;
        } else if kind.is_file() {
            copied.push(relative.join(&name).to_string_lossy().into_owned());
            let content = fs::read(entry.path())?;
            if fs::read(&target).ok().as_deref() != Some(content.as_slice()) {
                let mode = entry.metadata()?.permissions();
                write_atomic(&target, &content)?;
                fs::set_permissions(&target, mode)?;
            }
        }
    }
    for entry in fs::read_dir(to)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        let is_config = name_text.ends_with(".tf") || name_text.ends_with(".tf.json");
        if is_config && entry.file_type()?.is_file() && !from.join(&name).exists() {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Creates `path` unless it is there; its parent must exist (so a directory
/// of a workspace removed meanwhile is not brought back).
pub fn make_dir(path: &Path) -> io::Result<()> {
    match fs::create_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}

/// Like `write_atomic`, without forcing the content to disk first.
fn replace(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(content)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Runs file work that may wait on the disk (an fsync'd write waits for the
/// journal, behind whatever else the machine writes) on the blocking pool, so
/// a request worker is never held by it.
pub async fn off_runtime<T, F>(work: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

/// Writes a file so readers see the old content or the new, never a mix:
/// a temporary file in the same directory (which must exist), synced, then
/// renamed over.
pub fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(content)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run request that passed the workspace's existence check creates its
    /// directories while `DELETE /workspaces/{name}` removes them.
    #[test]
    fn removal_succeeds_while_a_request_creates_directories_in_it() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let data = tempfile::tempdir().unwrap();
        for round in 0..50 {
            let ws = Workspace::new(data.path(), "race");
            ws.create("stack").unwrap();
            for i in 0..20 {
                fs::write(ws.terraform_dir().join(format!("f{i}.tf")), "#").unwrap();
            }
            let stop = Arc::new(AtomicBool::new(false));
            let creator = {
                let (ws, stop) = (ws.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = ws.ensure();
                    }
                })
            };
            let removed = ws.remove();
            stop.store(true, Ordering::Relaxed);
            creator.join().unwrap();
            assert!(removed.is_ok(), "round {round}: {removed:?}");
            assert!(!ws.exists());
            // The creator brought nothing back, and creating a workspace of
            // the same name starts afresh.
            assert!(!ws.root().exists(), "round {round}");
            ws.create("stack").unwrap();
            assert_eq!(fs::read_dir(ws.terraform_dir()).unwrap().count(), 0);
            fs::remove_dir_all(ws.root()).unwrap();
        }
        let left: Vec<_> = fs::read_dir(data.path().join("workspaces"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_removed_workspace_is_not_brought_back_by_a_late_request() {
        let stack = tempfile::tempdir().unwrap();
        fs::create_dir(stack.path().join("modules")).unwrap();
        fs::write(stack.path().join("modules/a.tf"), "#").unwrap();
        let data = tempfile::tempdir().unwrap();
        let ws = Workspace::new(data.path(), "gone");
        ws.create("stack").unwrap();
        ws.remove().unwrap();
        let kind = |r: io::Result<()>| r.unwrap_err().kind();
        assert_eq!(kind(ws.ensure()), io::ErrorKind::NotFound);
        assert_eq!(kind(ws.sync_stack(stack.path())), io::ErrorKind::NotFound);
        assert_eq!(
            kind(write_atomic(&ws.tfvars(), b"x = 1")),
            io::ErrorKind::NotFound
        );
        assert!(!ws.root().exists());
        // `default` is made on first use.
        let default = Workspace::new(data.path(), "default");
        default.sync_stack(stack.path()).unwrap();
        assert!(default.terraform_dir().join("modules/a.tf").is_file());
    }

    #[test]
    fn the_stack_is_mirrored_without_its_state_and_stale_files_go() {
        let stack = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        fs::write(stack.path().join("main.tf"), "# v1").unwrap();
        fs::write(stack.path().join("terraform.tfstate"), "{}").unwrap();
        fs::create_dir(stack.path().join("scripts")).unwrap();
        fs::write(stack.path().join("scripts/up.sh"), "#!/bin/sh").unwrap();
        let ws = Workspace::new(data.path(), "default");
        ws.sync_stack(stack.path()).unwrap();
        let tf = ws.terraform_dir();
        assert_eq!(fs::read_to_string(tf.join("main.tf")).unwrap(), "# v1");
        assert!(tf.join("scripts/up.sh").is_file());
        assert!(!tf.join("terraform.tfstate").exists());

        fs::remove_file(stack.path().join("main.tf")).unwrap();
        fs::remove_file(stack.path().join("scripts/up.sh")).unwrap();
        fs::write(stack.path().join("other.tf"), "# v2").unwrap();
        fs::write(tf.join("terraform.tfvars"), "x = 1").unwrap();
        ws.sync_stack(stack.path()).unwrap();
        assert!(!tf.join("main.tf").exists());
        assert!(
            !tf.join("scripts/up.sh").exists(),
            "a removed stack file goes"
        );
        assert!(tf.join("other.tf").exists());
        assert!(tf.join("terraform.tfvars").exists());
    }

    #[test]
    fn the_latest_plan_is_remembered_and_forgotten() {
        let data = tempfile::tempdir().unwrap();
        let ws = Workspace::new(data.path(), "default");
        ws.ensure().unwrap();
        assert!(ws.latest_plan().is_none());
        let plan = ws.plan_file("job1");
        fs::write(&plan, "plan").unwrap();
        ws.set_latest_plan(&plan, "abc").unwrap();
        let saved = ws.latest_plan().unwrap();
        assert_eq!(saved.path, plan);
        assert_eq!(saved.tfvars_sha256, "abc");
        ws.clear_latest_plan();
        assert!(ws.latest_plan().is_none());
        assert!(!plan.exists());
    }
}
