//! Builds the bundled skills and channels of `skills-wasm/` for
//! wasm32-wasip2 and embeds them, compressed, in the binary (`host/bundled.rs`
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
    let wit: Vec<_> = WIT.iter().map(|file| (file.to_string(), read(&root.join("wit").join(file)))).collect();
    let mut code = pack(&out, "WIT", &wit).0;
    code.push_str("const WIT_FILES: &[(&str, usize, usize)] = &[\n");
    code.push_str(&ranges(&wit).map(|(file, a, b)| format!("    ({file:?}, {a}, {b}),\n")).collect::<String>());
    code.push_str("];\n");
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_none() {
        code.push_str("const BUNDLED: &[Bundled] = &[];\nconst BUNDLE: Pack = Pack::EMPTY;\n");
        code.push_str("const SCRIPT_RUNNER: Option<Runner> = None;\n");
        std::fs::write(out.join("bundled.rs"), code).expect("write the bundle table");
        return;
    }
    // Relative to the package, as cargo reads it; the nested build runs
    // in skills-wasm/, so it gets the absolute path.
    let target = root.join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into())).join("wasm");
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
    let components: Vec<_> = BUNDLED
        .iter()
        .map(|(name, ..)| (name.to_string(), read(&built.join(format!("{}.wasm", name.replace('-', "_"))))))
        .collect();
    code.push_str(&pack(&out, "BUNDLE", &components).0);
    code.push_str("const BUNDLED: &[Bundled] = &[\n");
    for ((name, kind, summary), (_, start, end)) in BUNDLED.iter().zip(ranges(&components)) {
        let kind = if *kind == "skill" { "Kind::Skill" } else { "Kind::Channel" };
        code.push_str(&format!(
            "    Bundled {{ name: {name:?}, kind: {kind}, summary: {summary:?}, at: ({start}, {end}) }},\n"
        ));
    }
    code.push_str("];\n");
    // The interpreter of script skills: built in, never a skill of its own.
    let runner = [("script-runner".to_string(), read(&built.join("script_runner.wasm")))];
    let (packed, sha256) = pack(&out, "RUNNER_PACK", &runner);
    code.push_str(&packed);
    code.push_str(&format!(
        "const SCRIPT_RUNNER: Option<Runner> = Some(Runner {{ sha256: {sha256:?}, pack: RUNNER_PACK }});\n"
    ));
    std::fs::write(out.join("bundled.rs"), code).expect("write the bundle table");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Each file's name and byte range in its pack.
fn ranges(files: &[(String, Vec<u8>)]) -> impl Iterator<Item = (&str, usize, usize)> {
    files.iter().scan(0, |at, (name, bytes)| {
        *at += bytes.len();
        Some((name.as_str(), *at - bytes.len(), *at))
    })
}

/// Compress `files`, laid end to end, into one LZMA2 stream in
/// `$OUT_DIR/NAME.lzma` (one stream, so what the components share, the
/// standard library and the bindings' runtime, is stored once: the ten
/// components take 0.29 MB instead of 0.80 deflated one by one). Returns
/// the `const NAME: Pack` item and the sha256 of what it packs.
fn pack(out: &Path, name: &str, files: &[(String, Vec<u8>)]) -> (String, String) {
    use lzma_rust2::{Lzma2Options, Lzma2Writer};
    use sha2::Digest;
    let all = files.iter().flat_map(|(_, b)| b.iter().copied()).collect::<Vec<u8>>();
    // A window as large as the whole, so any repeat is found; the reader
    // needs a buffer this size, no more.
    let dict = (all.len() as u32).next_power_of_two().max(1 << 16);
    let mut options = Lzma2Options::with_preset(9);
    options.lzma_options.dict_size = dict;
    let mut writer = Lzma2Writer::new(Vec::new(), options);
    std::io::Write::write_all(&mut writer, &all).expect("compress in memory");
    let packed = writer.finish().expect("compress in memory");
    let file = out.join(format!("{}.lzma", name.to_lowercase()));
    std::fs::write(&file, packed).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
    let item = format!(
        "const {name}: Pack = Pack {{ lzma: include_bytes!({:?}), dict: {dict}, len: {} }};\n",
        file.display().to_string(),
        all.len()
    );
    (item, hex::encode(sha2::Sha256::digest(&all)))
}
