//! Builds the bundled skills and channels of `skills-wasm/` for
//! wasm32-wasip2 and embeds them, deflated, in the binary (`host/bundled.rs`
//! reads the table this writes to `$OUT_DIR/bundled.rs`), with the script
//! runner and the contract's WIT files (for `wasiclaw new`).
//!
//! The guests are built into `target/wasm`, the directory the tests build
//! them into, with the same command, so neither rebuilds the other's work.
//! Without the `bundled` feature nothing is built and the table is empty.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Package, kind and one line for `wasiclaw skills available`.
const BUNDLED: [(&str, &str, &str); 10] = [
    ("clock", "skill", "current time and time-zone conversion; asks for nothing"),
    ("notes", "skill", "keeps short notes (asks for kv storage)"),
    ("weather", "skill", "current weather and forecast from Open-Meteo (asks for HTTP to it)"),
    ("web-fetch", "skill", "fetches a web page as readable text (asks for HTTP to the hosts you allow)"),
    ("telegram", "channel", "Telegram bot: long polling or a webhook"),
    ("discord", "channel", "Discord bot: gateway websocket and REST"),
    ("slack", "channel", "Slack app: Events API webhook, chat.postMessage"),
    ("whatsapp", "channel", "WhatsApp Business: Cloud API webhook, Graph API messages"),
    ("matrix", "channel", "Matrix bot: client-server API, /sync long polling"),
    ("webhook", "channel", "generic JSON webhook in, JSON callback out"),
];

/// The contract's files, as `wasiclaw new` writes them into a project.
const WIT: [&str; 8] = [
    "plugin.wit",
    "deps/cli.wit",
    "deps/clocks.wit",
    "deps/filesystem.wit",
    "deps/http.wit",
    "deps/io.wit",
    "deps/random.wit",
    "deps/sockets.wit",
];

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=skills-wasm");
    println!("cargo:rerun-if-changed=wit");
    let mut wit = String::from("const WIT: &[(&str, &[u8])] = &[\n");
    for file in WIT {
        let deflated = out.join(format!("{}.deflate", file.replace('/', "-")));
        write_deflated(&root.join("wit").join(file), &deflated);
        wit.push_str(&format!("    ({file:?}, include_bytes!({:?})),\n", deflated.display().to_string()));
    }
    wit.push_str("];\n");
    std::fs::write(out.join("wit.rs"), wit).expect("write the WIT table");
    let table = out.join("bundled.rs");
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_none() {
        let none = "const BUNDLED: &[Bundled] = &[];\nconst SCRIPT_RUNNER: Option<Runner> = None;\n";
        std::fs::write(&table, none).expect("write the bundle table");
        return;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from).join("wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The whole workspace, as the tests build it: building a subset would
    // unify features differently and relink every guest each time.
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(root.join("skills-wasm"))
        .env("CARGO_TARGET_DIR", &target)
        // The host build's flags (e.g. for aarch64) are not the guests'.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("cannot run cargo to build the bundled components");
    if !status.success() {
        panic!(
            "building the bundled components (skills-wasm/) failed. If the wasm target is missing, run \
             `rustup target add wasm32-wasip2`; or build without them: `--no-default-features`"
        );
    }
    let built = target.join("wasm32-wasip2/release");
    let mut code = String::from("const BUNDLED: &[Bundled] = &[\n");
    for (name, kind, summary) in BUNDLED {
        let wasm = built.join(format!("{}.wasm", name.replace('-', "_")));
        let deflated = out.join(format!("{name}.wasm.deflate"));
        write_deflated(&wasm, &deflated);
        let kind = if kind == "skill" { "Kind::Skill" } else { "Kind::Channel" };
        code.push_str(&format!(
            "    Bundled {{ name: {name:?}, kind: {kind}, summary: {summary:?}, deflated: include_bytes!({:?}) }},\n",
            deflated.display().to_string()
        ));
    }
    code.push_str("];\n");
    // The interpreter of script skills: built in, never a skill of its own.
    let runner = built.join("script_runner.wasm");
    let deflated = out.join("script_runner.wasm.deflate");
    let sha256 = write_deflated(&runner, &deflated);
    code.push_str(&format!(
        "const SCRIPT_RUNNER: Option<Runner> = Some(Runner {{ sha256: {sha256:?}, deflated: include_bytes!({:?}) }});\n",
        deflated.display().to_string()
    ));
    std::fs::write(&table, code).expect("write the bundle table");
}

/// Deflate `from` into `to`; returns the sha256 of `from`.
fn write_deflated(from: &Path, to: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
    std::fs::write(to, miniz_oxide::deflate::compress_to_vec(&bytes, 9))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", to.display()));
    hex::encode(sha2::Sha256::digest(&bytes))
}
