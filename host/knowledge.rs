//! Knowledge skills: `SKILL.md` files (front matter with `name` and
//! `description`, then instructions) in the skills folder, as
//! `skills/NAME/SKILL.md` or `skills/NAME.md`.
//!
//! They carry no authority: the model sees only names and descriptions and
//! loads the instructions on demand through the `read_skill` host tool, so
//! the context stays small.

use std::path::{Path, PathBuf};

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
    Some((field("name")?, field("description").unwrap_or_default(), body.trim().to_string()))
}

/// Every knowledge skill in `dir`, sorted by name. Files without valid
/// front matter are skipped with a warning.
pub fn scan(dir: &Path) -> Vec<Knowledge> {
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && path.join("SKILL.md").is_file() {
            files.push(path.join("SKILL.md"));
        } else if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut out: Vec<Knowledge> = files
        .into_iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            match parse(&text) {
                Some((name, description, _)) => Some(Knowledge { name, description, path }),
                None => {
                    tracing::warn!("{}: no `---` front matter with a `name:`; skipped", path.display());
                    None
                }
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The instructions of one knowledge skill.
pub fn instructions(dir: &Path, name: &str) -> Option<String> {
    let k = scan(dir).into_iter().find(|k| k.name == name)?;
    parse(&std::fs::read_to_string(k.path).ok()?).map(|(_, _, body)| body)
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
}
