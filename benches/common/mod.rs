//! What the cargo benches share: building the guest components and the
//! Python example skill.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Build skills-wasm for wasm32-wasip2 and return where the `.wasm` files are.
pub(crate) fn guests() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
        .current_dir(root().join("skills-wasm"))
        .env("CARGO_TARGET_DIR", root().join("target/wasm"))
        .status()
        .expect("run cargo for the guest components");
    assert!(status.success(), "building skills-wasm failed (is `rustup target add wasm32-wasip2` done?)");
    root().join("target/wasm/wasm32-wasip2/release")
}

/// Build the Python example with componentize-py into `out`, if the tool
/// is installed (`.ci/setup` installs it).
pub(crate) fn python_skill(out: &Path) -> bool {
    let built = Command::new("componentize-py")
        .args(["-d", "wit", "-w", "wasiclaw:plugin/skill", "componentize", "-p", "examples/python-skill", "app", "-o"])
        .arg(out)
        .current_dir(root())
        .output();
    matches!(built, Ok(o) if o.status.success())
}
