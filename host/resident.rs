//! What the daemon leaves resident once it goes idle: the heap a compile
//! freed, handed back to the system (from two arenas, not one per thread),
//! and the binary's code pages, unmapped (Linux only; elsewhere these do
//! nothing).
//!
//! Work maps code: starting runs most of the binary once (the CLI parser,
//! the config and database readers, the linker of every WASI import), a
//! compile runs all of Cranelift, and the kernel maps code in whole folios
//! around each page run, so after a few calls 8–9 of the 10.5 MiB of code
//! are mapped and counted in the RSS of a daemon that then sits idle for
//! hours. Once it has been idle for [`IDLE`] after work, [`settle_when_idle`]
//! unmaps the code (`MADV_DONTNEED` on the executable's `r-xp` mappings).
//! That frees nothing the kernel could not reclaim anyway (clean pages of
//! the binary file), but unmapped pages are the first it reclaims when a
//! small board runs short, and the code the next request runs comes back
//! from the page cache by minor faults (a few milliseconds, once), with no
//! disk read while the file stays cached.
//!
//! Invariant: only mappings that are executable and not writable are
//! advised. Code pages are never written (a position-independent
//! executable has no text relocations), so they hold exactly the file's
//! contents and dropping them loses nothing; the read-only data after
//! relocation (RELRO) was written and is never touched here.

/// Let all threads share two heap arenas. glibc gives each new thread an
/// arena of its own (up to eight per core), and the heap a compile leaves
/// scattered over many arenas cannot be handed back: after compiling 12
/// components the daemon kept 8 MiB of anonymous memory with eight arenas
/// and 5 MiB with two (`benches/idle.sh`). Two suit the small machines this
/// runs on, where few threads allocate at once.
pub fn few_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hand the heap a compile freed back to the system: glibc keeps freed
/// memory in per-thread arenas, and a 400 MB compile would otherwise stay
/// in the daemon's resident size for good.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Unmap this executable's code pages (see the module doc); returns the
/// bytes of the ranges advised.
pub fn drop_code_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let (Ok(exe), Ok(maps)) = (std::fs::read_link("/proc/self/exe"), std::fs::read_to_string("/proc/self/maps"))
        else {
            return 0;
        };
        let exe = exe.to_string_lossy();
        let mut advised = 0;
        for line in maps.lines().filter(|l| l.ends_with(&*exe)) {
            let mut fields = line.split_whitespace();
            let (Some(range), Some("r-xp")) = (fields.next(), fields.next()) else { continue };
            let Some((start, end)) = range.split_once('-') else { continue };
            let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
                continue;
            };
            // SAFETY: the range is a whole mapping of this executable that
            // is executable and not writable: its pages are the file's
            // contents, mapped again on the next access (module doc).
            if unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) } == 0 {
                advised += end - start;
            }
        }
        advised
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// How long the daemon must have used (almost) no CPU before it settles.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(15);

/// Below this much CPU time over [`IDLE`], the daemon counts as idle.
const IDLE_CPU: std::time::Duration = std::time::Duration::from_millis(20);

/// This much CPU time since the last settling is work that may have mapped
/// code (one tool call is about a millisecond; the timers of an idle
/// daemon take microseconds).
const WORK_CPU: std::time::Duration = std::time::Duration::from_millis(1);

/// Forever: each time the process has been idle for [`IDLE`] after doing
/// some work, call `release` (the caller's caches), then release freed heap
/// and unmap the code pages. One wakeup per [`IDLE`], a clock read each.
pub async fn settle_when_idle(release: impl Fn()) {
    // Starting is work: it counts from zero.
    let (mut window_start, mut settled_at) = (cpu_time(), std::time::Duration::ZERO);
    loop {
        tokio::time::sleep(IDLE).await;
        let now = cpu_time();
        if now.saturating_sub(window_start) < IDLE_CPU && now.saturating_sub(settled_at) >= WORK_CPU {
            release();
            release_freed_memory();
            let code = drop_code_pages();
            tracing::debug!("idle: unmapped {} KiB of code pages", code / 1024);
            settled_at = cpu_time();
        }
        window_start = cpu_time();
    }
}

/// CPU time this process has used, all threads.
fn cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
