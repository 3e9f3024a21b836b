//! Knowledge skills: `SKILL.md` files (front matter with `name` and
//! `description`, then instructions) in the skills folder, as
//! `skills/NAME/SKILL.md` or `skills/NAME.md`.
//!
//! They carry no authority: the model sees only names and descriptions and
//! loads the instructions on demand through the `read_skill` host tool, so
//! the context stays small.
//!
//! Bounded, since every model request lists them: a file over [`MAX_FILE`]
//! or with a name over [`MAX_NAME`] bytes is skipped with a warning, and a
//! description is cut to [`MAX_DESCRIPTION`] bytes. Every model round lists
//! them twice (the tools, the system prompt), so [`Knowledges`] reads a file
//! to list it only when its size, mtime or inode changed.

use crate::stamp::Stamp;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The largest knowledge file read.
pub const MAX_FILE: u64 = 256 << 10;
/// The longest name: the model calls `read_skill` with it.
pub const MAX_NAME: usize = 64;
/// What one description may add to every request.
pub const MAX_DESCRIPTION: usize = 300;

/// A knowledge skill: a `SKILL.md` of instructions.
#[derive(Clone, Debug, PartialEq)]
pub struct Knowledge {
    /// Its name.
    pub name: String,
    /// When to use it.
    pub description: String,
    /// The file.
    pub path: PathBuf,
}

/// Split `---\nfront matter\n---\nbody`; returns (name, description, body).
fn parse(text: &str) -> Option<(String, String, String)> {
    let rest = text.strip_prefix("---")?.trim_start_matches(['\r', '\n']);
    let end = rest.find("\n---")?;
    let (front, body) = (&rest[..end], &rest[end + 4..]);
    let field = |key: &str| {
        front.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_string())
        })
    };
    let name = field("name").filter(|n| n.len() <= MAX_NAME)?;
    let description = crate::text::truncate(&field("description").unwrap_or_default(), MAX_DESCRIPTION);
    Some((name, description, body.trim().to_string()))
}

/// The text of `path`, if it is within [`MAX_FILE`].
fn read(path: &Path) -> Option<String> {
    match crate::stamp::read(path, MAX_FILE).map(String::from_utf8) {
        Ok(Ok(text)) => Some(text),
        Ok(Err(_)) => {
            tracing::warn!("{}: not UTF-8 text; skipped", path.display());
            None
        }
        Err(e) => {
            tracing::warn!("{}: {e}; skipped", path.display());
            None
        }
    }
}

/// The knowledge skills of one folder, each file read again only when its
/// stamp changed (a file skipped as invalid is remembered too, so its
/// warning is logged once, not every model round).
#[derive(Default)]
pub struct Knowledges {
    seen: Mutex<HashMap<PathBuf, (Stamp, Option<Knowledge>)>>,
    reads: AtomicU64,
}

impl Knowledges {
    /// Every knowledge skill in `dir`, sorted by name. Files without valid
    /// front matter are skipped with a warning.
    pub fn scan(&self, dir: &Path) -> Vec<Knowledge> {
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && path.join("SKILL.md").is_file() {
                files.push(path.join("SKILL.md"));
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
        let mut seen = self.seen.lock().unwrap();
        seen.retain(|path, _| files.contains(path));
        let mut out: Vec<Knowledge> = files
            .into_iter()
            .filter_map(|path| {
                let stamp = crate::stamp::of(&path)?;
                if let Some((known, k)) = seen.get(&path)
                    && *known == stamp
                {
                    return k.clone();
                }
                self.reads.fetch_add(1, Ordering::Relaxed);
                let k = load(path.clone());
                seen.insert(path, (stamp, k.clone()));
                k
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The instructions of one knowledge skill, read now.
    pub fn instructions(&self, dir: &Path, name: &str) -> Option<String> {
        let k = self.scan(dir).into_iter().find(|k| k.name == name)?;
        parse(&read(&k.path)?).map(|(_, _, body)| body)
    }

    /// Files read to be listed since start (the instructions aside).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// The knowledge skill `path` holds, or None with a warning.
fn load(path: PathBuf) -> Option<Knowledge> {
    match parse(&read(&path)?) {
        Some((name, description, _)) => Some(Knowledge { name, description, path }),
        None => {
            tracing::warn!(
                "{}: no `---` front matter with a `name:` of at most {MAX_NAME} bytes; skipped",
                path.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn front_matter() {
        let (name, desc, body) =
            super::parse("---\nname: pdf\ndescription: \"Read PDFs\"\n---\n# Steps\n1. x\n").unwrap();
        assert_eq!((name.as_str(), desc.as_str(), body.as_str()), ("pdf", "Read PDFs", "# Steps\n1. x"));
        assert!(super::parse("no front matter").is_none());
    }

    /// What travels with every request is bounded, and a file too large
    /// to list is not read.
    #[test]
    fn knowledge_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let write = |file: &str, text: String| std::fs::write(dir.path().join(file), text).unwrap();
        write("wordy.md", format!("---\nname: wordy\ndescription: {}\n---\nbody\n", "d".repeat(5000)));
        write("named.md", format!("---\nname: {}\n---\nbody\n", "n".repeat(super::MAX_NAME + 1)));
        write("huge.md", format!("---\nname: huge\n---\n{}", "x".repeat(super::MAX_FILE as usize)));
        let knowledges = super::Knowledges::default();
        let found = knowledges.scan(dir.path());
        assert_eq!(found.len(), 1, "{found:?}");
        let description = &found[0].description;
        assert!(description.starts_with(&"d".repeat(super::MAX_DESCRIPTION)) && description.len() < 400);
        assert!(knowledges.instructions(dir.path(), "huge").is_none());
    }

    /// A file is read to be listed when it is new or changed, not every
    /// time the model is asked; a removed one is no longer listed.
    #[test]
    fn unchanged_files_are_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let write = |file: &str, text: &str| std::fs::write(dir.path().join(file), text).unwrap();
        write("a.md", "---\nname: a\ndescription: first\n---\nbody\n");
        write("bad.md", "no front matter");
        let knowledges = super::Knowledges::default();
        let names = |k: &super::Knowledges| k.scan(dir.path()).into_iter().map(|k| k.description).collect::<Vec<_>>();
        assert_eq!(names(&knowledges), ["first"]);
        assert_eq!(knowledges.reads(), 2);
        assert_eq!(names(&knowledges), ["first"]);
        assert_eq!(knowledges.reads(), 2, "an unchanged file was read again");
        write("a.md", "---\nname: a\ndescription: second, longer\n---\nbody\n");
        assert_eq!(names(&knowledges), ["second, longer"]);
        assert_eq!(knowledges.reads(), 3);
        std::fs::remove_file(dir.path().join("a.md")).unwrap();
        assert!(names(&knowledges).is_empty());
        assert_eq!(knowledges.instructions(dir.path(), "a"), None);
    }
}
