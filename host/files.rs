//! The private directory a `files` grant preopens as `/data`: its quota and
//! its hygiene.
//!
//! Invariants:
//! - A directory at or over `[limits] files_mb` is preopened read-only.
//! - Below it, a call may write only the room left ([`Room`]), shared
//!   with the component's calls running at the same time: WASI has no
//!   write hook, so the linker's `descriptor.write`, `write-via-stream`,
//!   `append-via-stream` and `set-size` are replaced by ones that count (a
//!   stream is wrapped in [`Metered`]; growing a file takes what it adds).
//!   A write past the room fails with no space left, once audited. Room is
//!   counted in bytes written, so overwriting counts too: it bounds what
//!   one call can add, never undercounts. Each
//!   file or directory created costs [`ENTRY`] of the room too (`open-at`
//!   with `create`, `create-directory-at`), so inodes are bounded as well.
//! - No symlink survives a call: the sandbox resolves them inside the
//!   directory, but host tools (backups, the owner's shell) would follow
//!   them out of it, so each one is removed and audited.

use crate::context::HostCtx;
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::filesystem::{WasiFilesystemCtxView, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamError, StreamResult};

/// What an entry (a file, a directory) costs at least: a block and an
/// inode, so that empty files cannot be made without bound.
const ENTRY: u64 = 4096;

/// Total bytes of regular files under `dir`, not following links, each
/// entry counted as at least [`ENTRY`].
pub fn size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.path(), e.file_type().ok()?, e.metadata().ok()?)))
        .map(|(path, kind, meta)| {
            if kind.is_dir() {
                ENTRY + size(&path)
            } else if kind.is_file() {
                meta.len().max(ENTRY)
            } else {
                ENTRY
            }
        })
        .sum()
}

/// The room this call may write to `dir`, if any; audited when none.
pub fn room(ctx: &HostCtx, dir: &Path) -> Option<Arc<Room>> {
    let quota = ctx.limits.files_mb << 20;
    let left = ctx.budget.files_left(|| quota.saturating_sub(size(dir)));
    if left.load(Ordering::Relaxed) > 0 {
        return Some(Arc::new(Room { left, ctx: ctx.clone(), told: AtomicBool::new(false) }));
    }
    let (used, mb) = (size(dir), ctx.limits.files_mb);
    let why = if used >= quota {
        format!("{used} bytes, at or over the {mb} MiB quota ([limits] files_mb): /data is read-only")
    } else {
        format!(
            "calls running meanwhile took the room left under the {mb} MiB quota ([limits] files_mb): /data is read-only"
        )
    };
    ctx.audit("files", &dir.display().to_string(), false, &why);
    None
}

/// What one call may still write under `/data`, shared by its streams
/// (and, the count, by the component's other calls running meanwhile).
pub struct Room {
    left: Arc<AtomicU64>,
    ctx: HostCtx,
    told: AtomicBool,
}

impl Room {
    /// Take `n` bytes, or refuse (audited once per call).
    fn take(&self, n: u64) -> bool {
        let taken = self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(n));
        if taken.is_err() && !self.told.swap(true, Ordering::Relaxed) {
            let why =
                format!("a write past the {} MiB quota ([limits] files_mb) was refused", self.ctx.limits.files_mb);
            self.ctx.audit("files", "/data", false, &why);
        }
        taken.is_ok()
    }
}

/// A file's output stream that takes what it writes from the call's room.
struct Metered {
    inner: DynOutputStream,
    room: Arc<Room>,
}

fn no_space() -> StreamError {
    StreamError::LastOperationFailed(wasmtime::format_err!("no space left: [limits] files_mb"))
}

#[wasmtime_wasi::async_trait]
impl Pollable for Metered {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Metered {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if !self.room.take(bytes.len() as u64) {
            return Err(no_space());
        }
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    // The file stream's own blocking write skips a task hand-off per chunk.
    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        if !self.room.take(bytes.len() as u64) {
            return Err(no_space());
        }
        self.inner.blocking_write_and_flush(bytes).await
    }

    // Not capped by the room: a blocking write checks again after its last
    // chunk, and an exactly full room must not fail a write that fitted.
    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

const FILESYSTEM: &str = "wasi:filesystem/types@0.2.12";

type StreamOpened = wasmtime::Result<(Result<Resource<DynOutputStream>, ErrorCode>,)>;

/// A store's state that may carry a call's [`Room`].
pub trait HasRoom: WasiView {
    /// The call's room under `/data`, if it may write there.
    fn room(&self) -> Option<&Arc<Room>>;
}

fn room_and_view<T: HasRoom>(state: &mut T) -> (Option<Arc<Room>>, WasiFilesystemCtxView<'_>) {
    (state.room().cloned(), state.filesystem())
}

/// Take `cost` bytes from the call's room (refused: no space left), then
/// run `op`, with WASI's error as the guest's value.
async fn charged<T: HasRoom, R>(
    state: &mut T,
    cost: u64,
    op: impl AsyncFnOnce(&mut WasiFilesystemCtxView<'_>) -> wasmtime_wasi::p2::FsResult<R>,
) -> wasmtime::Result<(Result<R, ErrorCode>,)> {
    if cost > 0 && state.room().is_some_and(|room| !room.take(cost)) {
        return Ok((Err(ErrorCode::InsufficientSpace),));
    }
    let mut view = state.filesystem();
    match op(&mut view).await {
        Ok(value) => Ok((Ok(value),)),
        Err(e) => Ok((Err(types::Host::convert_error_code(&mut view, e)?),)),
    }
}

/// A stream WASI opened on a file, metered when the call has a room.
fn metered(
    mut view: WasiFilesystemCtxView<'_>,
    opened: wasmtime_wasi::p2::FsResult<Resource<DynOutputStream>>,
    room: Option<Arc<Room>>,
) -> StreamOpened {
    let stream = match opened {
        Ok(stream) => stream,
        Err(e) => return Ok((Err(types::Host::convert_error_code(&mut view, e)?),)),
    };
    let Some(room) = room else { return Ok((Ok(stream),)) };
    let inner = view.table.delete(stream)?;
    let metered: DynOutputStream = Box::new(Metered { inner, room });
    Ok((Ok(view.table.push(metered)?),))
}

/// Replace the linker's file writes with ones that count against the
/// call's [`Room`] (see the module's invariants).
pub fn meter<T: HasRoom + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut fs = linker.instance(FILESYSTEM)?;
    fs.func_wrap_async(
        "[method]descriptor.write",
        |mut store, (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let cost = buf.len() as u64;
                charged(store.data_mut(), cost, async |view| HostDescriptor::write(view, fd, buf, offset).await).await
            })
        },
    )?;
    fs.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, at, path, open, flags): (Resource<Descriptor>, PathFlags, String, OpenFlags, DescriptorFlags)| {
            Box::new(async move {
                let cost = if open.contains(OpenFlags::CREATE) { ENTRY } else { 0 };
                charged(store.data_mut(), cost, async |view| {
                    HostDescriptor::open_at(view, fd, at, path, open, flags).await
                })
                .await
            })
        },
    )?;
    fs.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                charged(store.data_mut(), ENTRY, async |view| HostDescriptor::create_directory_at(view, fd, path).await)
                    .await
            })
        },
    )?;
    fs.func_wrap_async("[method]descriptor.set-size", |mut store, (fd, size): (Resource<Descriptor>, u64)| {
        Box::new(async move {
            let state = store.data_mut();
            // Growing takes what it adds: the file is sparse, but the
            // next call counts its length (and a backup copies it).
            let mut grows = 0;
            if state.room().is_some() {
                let now = HostDescriptor::stat(&mut state.filesystem(), Resource::new_borrow(fd.rep())).await;
                grows = now.map_or(0, |stat| size.saturating_sub(stat.size));
            }
            charged(state, grows, async |view| HostDescriptor::set_size(view, fd, size).await).await
        })
    })?;
    fs.func_wrap("[method]descriptor.write-via-stream", |mut store, (fd, offset): (Resource<Descriptor>, u64)| {
        let (room, mut view) = room_and_view(store.data_mut());
        let opened = HostDescriptor::write_via_stream(&mut view, fd, offset);
        metered(view, opened, room)
    })?;
    fs.func_wrap("[method]descriptor.append-via-stream", |mut store, (fd,): (Resource<Descriptor>,)| {
        let (room, mut view) = room_and_view(store.data_mut());
        let opened = HostDescriptor::append_via_stream(&mut view, fd);
        metered(view, opened, room)
    })?;
    Ok(())
}

/// Remove every symlink the call left under `dir`.
pub fn after_call(ctx: &HostCtx, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let Ok(kind) = entry.file_type() else { continue };
        let path = entry.path();
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default();
            let removed = std::fs::remove_file(&path).is_ok();
            let detail = format!("symlink to {target} {}", if removed { "removed" } else { "could not be removed" });
            ctx.audit("files", &path.display().to_string(), false, &detail);
        } else if kind.is_dir() {
            after_call(ctx, &path);
        }
    }
}
