//! `wasiclaw new`: every template is a skill that works, built with the
//! toolchain `.ci/setup` installs (Rust's wasm target, componentize-py,
//! ComponentizeJS from tests/platforms).

use crate::support::*;
use std::path::Path;
use std::process::Command;

#[test]
fn new_script_writes_a_skill_that_answers_once_approved() {
    let env = Env::new();
    let out = env.ok(&["new", "script", "greeter"]);
    assert!(out.contains("skills approve greeter"), "{out}");
    assert_eq!(env.list()[0]["status"], "needs-approval");
    env.ok(&["skills", "approve", "greeter"]);
    assert_eq!(env.ok(&["tool", "greeter.hello", r#"{"name":"Ada"}"#]).trim(), "Hello, Ada!");
    let again = env.cli(&["new", "script", "greeter"]);
    assert!(!again.status.success() && stderr(&again).contains("exists already"), "{}", stderr(&again));
    let bad = env.cli(&["new", "script", "../escape"]);
    assert!(!bad.status.success() && stderr(&bad).contains("not a skill name"), "{}", stderr(&bad));
}

/// `wasiclaw new KIND NAME --dir DIR`, checked to write the contract too.
fn new_project(env: &Env, kind: &str, name: &str, dir: &Path) -> String {
    let out = env.ok(&["new", kind, name, "--dir", dir.to_str().unwrap()]);
    assert!(dir.join("wit/plugin.wit").is_file() && dir.join("wit/deps/http.wit").is_file(), "{out}");
    out
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (.ci/setup installs it)"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A built skill component of the current contract.
fn assert_skill_component(file: &Path) {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(bytes.starts_with(b"\0asm") && bytes[4..8] != [1, 0, 0, 0], "not a component: {}", file.display());
    let exports = b"wasiclaw:plugin/tool-api@0.2.0";
    assert!(bytes.windows(exports.len()).any(|w| w == exports), "{} does not export the tool API", file.display());
}

#[test]
fn the_rust_template_builds_and_answers() {
    let env = Env::new();
    let projects = tempfile::tempdir().unwrap();
    let dir = projects.path().join("hello-rs");
    let out = new_project(&env, "rust", "hello-rs", &dir);
    assert!(out.contains("cargo build --release --target wasm32-wasip2"), "{out}");
    let target = Path::new(ROOT).join("target/wasm");
    run(Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target));
    let built = target.join("wasm32-wasip2/release/hello_rs.wasm");
    assert_skill_component(&built);
    env.install_file(&built, "hello-rs");
    env.ok(&["skills", "approve", "hello-rs"]);
    assert_eq!(env.ok(&["tool", "hello-rs.hello", r#"{"name":"Ada"}"#]).trim(), "Hello, Ada!");
}

#[test]
fn the_python_and_js_templates_build() {
    let env = Env::new();
    let projects = tempfile::tempdir().unwrap();
    let py = projects.path().join("hello-py");
    let out = new_project(&env, "python", "hello-py", &py);
    assert!(out.contains("componentize-py"), "{out}");
    run(Command::new("componentize-py")
        .args(["-d", "wit", "-w", "wasiclaw:plugin/skill", "componentize", "app", "-o", "hello-py.wasm"])
        .current_dir(&py));
    assert_skill_component(&py.join("hello-py.wasm"));

    let js = projects.path().join("hello-js");
    let out = new_project(&env, "js", "hello-js", &js);
    assert!(out.contains("npm run build"), "{out}");
    let package: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(js.join("package.json")).unwrap()).unwrap();
    let build = package["scripts"]["build"].as_str().unwrap();
    // The package's own build script, with ComponentizeJS from tests/platforms (no download here).
    let bin = Path::new(ROOT).join("tests/platforms/node_modules/.bin");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    run(Command::new("sh").args(["-c", build]).current_dir(&js).env("PATH", path));
    assert_skill_component(&js.join("hello-js.wasm"));
}
