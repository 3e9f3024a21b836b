//! The private directory a `files` grant preopens as `/data`: its quota and
//! its hygiene.
//!
//! Invariants:
//! - A directory at or over `[limits] files_mb` is preopened read-only, so
//!   it grows by at most what one call writes before the next call sees
//!   the quota (WASI has no write hook to stop a write midway).
//! - No symlink survives a call: the sandbox resolves them inside the
//!   directory, but host tools (backups, the owner's shell) would follow
//!   them out of it, so each one is removed and audited.

use crate::context::HostCtx;
use std::path::Path;

/// Total bytes of regular files under `dir`, not following links.
fn size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.path(), e.file_type().ok()?, e.metadata().ok()?)))
        .map(|(path, kind, meta)| {
            if kind.is_dir() {
                size(&path)
            } else if kind.is_file() {
                meta.len()
            } else {
                0
            }
        })
        .sum()
}

/// Whether the component may write to `dir` in this call; audited when not.
pub fn within_quota(ctx: &HostCtx, dir: &Path) -> bool {
    let quota = ctx.limits.files_mb << 20;
    let used = size(dir);
    if used < quota {
        return true;
    }
    ctx.audit(
        "files",
        &dir.display().to_string(),
        false,
        &format!(
            "{used} bytes, at or over the {} MiB quota ([limits] files_mb): /data is read-only",
            ctx.limits.files_mb
        ),
    );
    false
}

/// Remove every symlink the call left under `dir`.
pub fn after_call(ctx: &HostCtx, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let Ok(kind) = entry.file_type() else { continue };
        let path = entry.path();
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default();
            let removed = std::fs::remove_file(&path).is_ok();
            let detail = format!("symlink to {target} {}", if removed { "removed" } else { "could not be removed" });
            ctx.audit("files", &path.display().to_string(), false, &detail);
        } else if kind.is_dir() {
            after_call(ctx, &path);
        }
    }
}
