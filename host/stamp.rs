//! A file's stamp: its size, mtime and inode. It says cheaply, without
//! reading the file, that it is unchanged: writing it changes the size or
//! the mtime, and replacing it by a rename changes the inode. The skills
//! folder's scan and the knowledge files read a file again only when its
//! stamp changed, and read it through [`read`]: only a regular file,
//! only within a bound.

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

/// `path` read whole, if it is a regular file of at most `most` bytes.
/// Whoever could put a file in the skills folder (a skill pack unpacked,
/// a link) chose what its name is: it is opened without blocking, so a
/// FIFO cannot hang a scan, a CLI command or a model round, and checked on
/// the open handle, so a device (`/dev/zero`) or a file grown since its
/// stamp was taken is refused (`FileTooLarge` names the sizes), not read
/// into memory.
pub fn read(path: &Path, most: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        let kind = match () {
            _ if t.is_dir() => "a directory",
            _ if t.is_fifo() => "a FIFO",
            _ if t.is_socket() => "a socket",
            _ => "a device",
        };
        return Err(Error::new(ErrorKind::InvalidInput, format!("it is {kind}, not a regular file")));
    }
    let too_big = |len: u64| {
        Error::new(ErrorKind::FileTooLarge, format!("the file is {} KiB; one is at most {} KiB", len >> 10, most >> 10))
    };
    if meta.len() > most {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(most + 1).read_to_end(&mut bytes)?;
    match bytes.len() as u64 {
        len if len > most => Err(too_big(len)),
        _ => Ok(bytes),
    }
}
