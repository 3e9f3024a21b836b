//! `wasiclaw new`: start a skill in any supported language from a working
//! template that says hello. A script goes straight into `skills/` (the
//! built-in runner needs no toolchain); a component project is written to
//! a new directory with the contract's WIT files and its build command.

use crate::cli::args::NewCommand;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use wasiclaw::config::Paths;

/// The template files of each kind: (path in the project, text).
const RUST: [(&str, &str); 2] = [
    ("Cargo.toml", include_str!("../../templates/rust.toml")),
    ("src/lib.rs", include_str!("../../templates/rust.rs")),
];
const PYTHON: [(&str, &str); 1] = [("app.py", include_str!("../../templates/python.py"))];
const JS: [(&str, &str); 2] = [
    ("NAME.js", include_str!("../../templates/js.js")),
    ("package.json", include_str!("../../templates/package.json")),
];

pub(crate) fn new(paths: &Paths, cmd: NewCommand) -> anyhow::Result<()> {
    let (NewCommand::Script { name }
    | NewCommand::Rust { name, .. }
    | NewCommand::Python { name, .. }
    | NewCommand::Js { name, .. }) = &cmd;
    if !wasiclaw::component::valid_name(name) {
        bail!("`{name}` is not a skill name: use {}", wasiclaw::component::NAME_RULE);
    }
    let (name, dir, files, build): (String, Option<PathBuf>, &[(&str, &str)], &str) = match cmd {
        NewCommand::Script { name } => {
            let file = paths.skills_dir().join(format!("{name}.js"));
            if file.exists() {
                bail!("{} exists already; pick another name", file.display());
            }
            std::fs::create_dir_all(paths.skills_dir())?;
            std::fs::write(&file, fill(include_str!("../../templates/script.js"), &name))
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!("wrote {}", file.display());
            println!("next: edit it, then `wasiclaw skills approve {name}` and `wasiclaw tool {name}.hello '{{}}'`");
            return Ok(());
        }
        NewCommand::Rust { name, dir } => (name, dir, &RUST, "cargo build --release --target wasm32-wasip2"),
        NewCommand::Python { name, dir } => {
            (name, dir, &PYTHON, "componentize-py -d wit -w wasiclaw:plugin/skill componentize app -o NAME.wasm")
        }
        NewCommand::Js { name, dir } => (name, dir, &JS, "npm install && npm run build"),
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    if dir.exists() {
        bail!("{} exists already; pick another name or --dir", dir.display());
    }
    for (path, text) in files {
        write(&dir.join(fill(path, &name)), &fill(text, &name))?;
    }
    for (path, text) in wasiclaw::bundled::wit() {
        write(&dir.join("wit").join(path), &text)?;
    }
    println!("wrote {} (a `hello` skill, and the contract in wit/)", dir.display());
    println!("build: cd {} && {}", dir.display(), fill(build, &name));
    let built = if build.starts_with("cargo") {
        format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_"))
    } else {
        format!("{name}.wasm")
    };
    println!("then:  cp {built} {}/{name}.wasm && wasiclaw skills approve {name}", paths.skills_dir().display());
    Ok(())
}

/// A template with its placeholders filled in.
fn fill(template: &str, name: &str) -> String {
    template.replace("CRATE", &name.replace('-', "_")).replace("NAME", name)
}

fn write(file: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))
}
