//! The skills and channels built into this binary: `skills-wasm/`, compiled
//! for wasm32-wasip2 by `build.rs` and stored LZMA2-compressed, all of them
//! in one stream (they share much of their code), the script runner and
//! the WIT files in streams of their own. `wasiclaw skills
//! available` lists them, `skills add` writes one into `skills/`, and the
//! first start (no `skills/` folder yet) installs the bundled skills, not
//! the channels, which need the owner's accounts first.
//!
//! An installed component is an ordinary file in `skills/`: it is loaded,
//! approved and granted like any other, so being bundled earns it nothing.
//! Only `clock` asks for no rights and so works at once; the others wait for
//! the owner's grant.

use std::io::Write;
use std::path::{Path, PathBuf};

/// What a bundled component is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Tools for the agent.
    Skill,
    /// A chat platform.
    Channel,
}

/// A component built into the binary.
#[derive(Debug)]
pub struct Bundled {
    /// Its name, and its file's name in `skills/` (`NAME.wasm`).
    pub name: &'static str,
    /// Skill or channel.
    pub kind: Kind,
    /// One line for `skills available`.
    pub summary: &'static str,
    /// Its bytes' range in the unpacked [`BUNDLE`].
    at: (usize, usize),
}

/// The interpreter of script skills (`skills-wasm/script-runner`).
#[derive(Debug)]
pub struct Runner {
    /// The sha256 of its component: part of every script's identity.
    pub sha256: &'static str,
    pack: Pack,
}

impl Runner {
    /// The component's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.pack.unpack()
    }
}

/// Files laid end to end and compressed by `build.rs` as one LZMA2 stream.
#[derive(Debug)]
struct Pack {
    lzma: &'static [u8],
    /// The stream's dictionary size: the buffer unpacking needs.
    dict: u32,
    /// The unpacked length.
    len: usize,
}

impl Pack {
    #[allow(dead_code)] // only in a build without the `bundled` feature
    const EMPTY: Pack = Pack { lzma: &[], dict: 0, len: 0 };

    fn unpack(&self) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::with_capacity(self.len);
        if self.len > 0 {
            lzma_rust2::Lzma2Reader::new(self.lzma, self.dict, None)
                .read_to_end(&mut out)
                .expect("build.rs compressed it");
        }
        assert_eq!(out.len(), self.len, "build.rs recorded the length");
        out
    }
}

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// The contract's WIT files (`wit/`), as (path, text), for `wasiclaw new`.
pub fn wit() -> Vec<(&'static str, String)> {
    let all = WIT.unpack();
    WIT_FILES.iter().map(|&(path, a, b)| (path, String::from_utf8(all[a..b].to_vec()).expect("WIT is UTF-8"))).collect()
}

/// Every bundled component's bytes, unpacked at once (one decompression
/// of about 2 MB serves all of them).
pub struct Unpacked(Vec<u8>);

/// Unpack the bundled components.
pub fn unpack() -> Unpacked {
    Unpacked(BUNDLE.unpack())
}

impl Unpacked {
    /// The bytes of `b`.
    pub fn bytes(&self, b: &Bundled) -> &[u8] {
        &self.0[b.at.0..b.at.1]
    }
}

/// The script runner, if this build has it (the `bundled` feature).
pub fn script_runner() -> Option<&'static Runner> {
    SCRIPT_RUNNER.as_ref()
}

/// Every bundled component (none in a build without the `bundled` feature).
pub fn all() -> &'static [Bundled] {
    BUNDLED
}

/// The bundled component called `name`.
pub fn find(name: &str) -> Option<&'static Bundled> {
    BUNDLED.iter().find(|b| b.name == name)
}

/// How `skills/` holds a bundled component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    /// No `NAME.wasm`.
    Absent,
    /// This very build.
    Installed,
    /// A file of that name with other contents (an older or own build).
    Different,
}

/// What [`Bundled::install`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// Wrote the file.
    Written,
    /// This build was there already.
    Already,
    /// Another build is there; kept it.
    KeptOther,
}

impl Bundled {
    /// Its path in the skills folder `dir`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.wasm", self.name))
    }

    /// Whether `dir` holds it.
    pub fn presence(&self, dir: &Path, unpacked: &Unpacked) -> Presence {
        match crate::stamp::read(&self.path(dir), unpacked.bytes(self).len() as u64) {
            Ok(held) if held == unpacked.bytes(self) => Presence::Installed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Presence::Absent,
            // Longer, or no regular file: something else holds the name.
            _ => Presence::Different,
        }
    }

    /// Write it into the skills folder `dir`. A file of the same name with
    /// other contents is replaced only with `replace`: it may be the
    /// owner's own build. Written under a temporary name and renamed, so
    /// a watching daemon never loads half a file.
    pub fn install(&self, dir: &Path, replace: bool, unpacked: &Unpacked) -> std::io::Result<Installed> {
        match self.presence(dir, unpacked) {
            Presence::Installed => return Ok(Installed::Already),
            Presence::Different if !replace => return Ok(Installed::KeptOther),
            _ => {}
        }
        // Not `.wasm`, so the daemon ignores it until the rename.
        let tmp = dir.join(format!(".{}.wasm.part", self.name));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(unpacked.bytes(self))?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.path(dir))?;
        Ok(Installed::Written)
    }
}

/// The first start: install every bundled skill into the new skills
/// folder `dir`. Returns their names.
pub fn first_start(dir: &Path) -> std::io::Result<Vec<&'static str>> {
    let (mut installed, unpacked) = (Vec::new(), unpack());
    for b in BUNDLED.iter().filter(|b| b.kind == Kind::Skill) {
        b.install(dir, false, &unpacked)?;
        installed.push(b.name);
    }
    Ok(installed)
}
