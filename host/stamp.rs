//! A file's stamp: its size, mtime and inode. It says cheaply, without
//! reading the file, that it is unchanged: writing it changes the size or
//! the mtime, and replacing it by a rename changes the inode. The skills
//! folder's scan and the knowledge files read a file again only when its
//! stamp changed.

use std::path::Path;
use std::time::SystemTime;

/// Size, mtime and inode.
pub type Stamp = (u64, SystemTime, u64);

/// The stamp of `path`; None if it cannot be read.
pub fn of(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?, meta.ino()))
}
