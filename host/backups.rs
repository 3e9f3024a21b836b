//! Automatic backups: the daemon writes a checked copy of the database
//! (`Store::backup`) into `[storage] backup_dir` every `backup_every_hours`
//! and keeps the newest `backup_keep`. The directory is meant to be on
//! another device (a USB drive, a network share), so the owner's memories
//! and jobs outlive a dying SD card.
//!
//! Invariants:
//! - The directory is never created: a drive that is not mounted must not
//!   quietly become a folder on the card the copies are meant to outlive.
//! - Only files named as this module names them
//!   (`wasiclaw-YYYYMMDDTHHMMSSZ.redb`, and the `.partial` of one that did
//!   not finish) are ever removed, and only after a new copy passed its
//!   check: the directory always keeps its newest good copy, the one just
//!   taken, even when the clock went back and it has the oldest name.
//! - Idle stays idle: the task sleeps until the next copy is due. Only the
//!   first wait is read from the newest copy's name, capped at one period,
//!   so a clock that jumped cannot postpone the copies.
//! - A failure is logged, shown by `status` and `doctor`, told to the
//!   owner once per run of failures, and tried again in an hour.

use crate::config::{Config, Paths};
use crate::store::{Store, now_ms};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PREFIX: &str = "wasiclaw-";
/// After a failure: soon enough for a drive plugged back in, rare enough
/// not to hold the database's write lock against a dead share all day.
const RETRY: Duration = Duration::from_secs(3600);

/// A copy in the backup directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Copy {
    /// Its file name.
    pub name: String,
    /// When it was taken (Unix ms, from its name).
    pub time_ms: i64,
}

/// What `status` and `doctor` say of the backups.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Where the copies go.
    pub dir: PathBuf,
    /// The copies there, oldest first, or why the directory cannot be read.
    pub copies: Result<Vec<Copy>, String>,
    /// Why the last attempt failed, if it did (known to the daemon only).
    pub failing: Option<String>,
    /// Hours between copies.
    pub every_hours: u64,
    /// Other users may add files there (a sticky bit keeps them from
    /// replacing ours, not from adding a "newer" one).
    #[serde(default)]
    pub others_can_write: bool,
}

impl Report {
    /// One line on the backups, and what to do when they are not well.
    pub fn verdict(&self) -> (String, Option<String>) {
        let dir = self.dir.display();
        if let Some(why) = &self.failing {
            let fix = "fix what it says; the daemon tries again every hour";
            return (format!("the last backup failed: {}", crate::text::one_line(why)), Some(fix.into()));
        }
        let copies = match &self.copies {
            Err(e) => {
                let fix = "mount its drive, or create the directory, or fix [storage] backup_dir in config.toml";
                return (e.clone(), Some(fix.into()));
            }
            Ok(copies) => copies,
        };
        if self.others_can_write {
            // A copy put there by someone else, restored, would bring their
            // grants and approvals with it.
            let said = format!("other users may add or replace the copies in {dir}");
            return (said, Some(format!("chmod 700 {dir}, or choose a directory only you can write to")));
        }
        let Some(newest) = copies.last() else {
            let fix = "the daemon (`wasiclaw run`) takes one when it starts, or `wasiclaw backup FILE` takes one now";
            return (format!("no copy in {dir} yet"), Some(fix.into()));
        };
        let age_min = (now_ms() - newest.time_ms).max(0) / 60_000;
        let age = format!("{}h{:02}m ago", age_min / 60, age_min % 60);
        if age_min > 2 * 60 * self.every_hours as i64 {
            let fix = "`wasiclaw status` shows why the running daemon's backups fail, and the log says more";
            return (format!("the newest copy in {dir}, {}, was taken {age}", newest.name), Some(fix.into()));
        }
        let said = format!(
            "{} kept in {dir}, the newest {} ({age}), one every {} h",
            copies.len(),
            newest.name,
            self.every_hours
        );
        (said, None)
    }
}

/// The daemon's backups, as configured.
pub struct Backups {
    dir: PathBuf,
    every: Duration,
    keep: usize,
    /// `[agent] owner_chat`: where a failure is told, besides notifications.
    owner_chat: Option<String>,
    /// The state dir, whose settings each copy carries.
    paths: Paths,
    failing: Mutex<Option<String>>,
}

impl Backups {
    /// None when `[storage] backup_dir` is not set.
    pub fn new(config: &Config, paths: &Paths) -> Option<Arc<Self>> {
        let cfg = &config.storage;
        Some(Arc::new(Backups {
            dir: cfg.backup_dir.clone()?,
            every: Duration::from_secs(cfg.backup_every_hours * 3600),
            keep: cfg.backup_keep,
            owner_chat: config.agent.owner_chat.clone(),
            paths: paths.clone(),
            failing: Mutex::default(),
        }))
    }

    /// Tell the owner: in `wasiclaw notifications` and in their chat.
    fn tell(&self, db: &Store, text: &str) -> Result<(), crate::store::StoreError> {
        db.notify("(backup)", text)?;
        let owner = crate::queue::owner_chat(self.owner_chat.as_deref(), db);
        if let Some((channel, chat)) = owner.as_deref().and_then(|o| o.split_once(':')) {
            db.outbox_enqueue(channel, chat, text)?;
        }
        Ok(())
    }

    /// What is in the directory now, and the last failure.
    pub fn report(&self) -> Report {
        Report {
            dir: self.dir.clone(),
            copies: copies(&self.dir),
            failing: self.failing.lock().unwrap().clone(),
            every_hours: self.every.as_secs() / 3600,
            others_can_write: std::fs::metadata(&self.dir).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.permissions().mode() & 0o022 != 0
            }),
        }
    }

    /// Take a copy when one is due, for as long as the daemon runs.
    pub async fn run(self: Arc<Self>, db: Arc<Store>) {
        let every = self.every.as_millis() as i64;
        let newest = copies(&self.dir).ok().and_then(|c| c.last().map(|c| c.time_ms));
        let mut wait = newest.map_or(0, |t| (t + every - now_ms()).clamp(0, every));
        loop {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            let (me, store) = (self.clone(), db.clone());
            let taken =
                tokio::task::spawn_blocking(move || me.take(&store)).await.unwrap_or_else(|e| Err(e.to_string()));
            match taken {
                Ok(name) => {
                    tracing::info!("backup: wrote {}", self.dir.join(name).display());
                    *self.failing.lock().unwrap() = None;
                    wait = every;
                }
                Err(why) => {
                    tracing::error!("backup to {}: {why}", self.dir.display());
                    if self.failing.lock().unwrap().replace(why.clone()).is_none() {
                        let text = format!(
                            "The automatic backup to {} failed: {why}. It is tried again every hour; `wasiclaw doctor` \
                             checks it.",
                            self.dir.display()
                        );
                        if let Err(e) = self.tell(&db, &text) {
                            tracing::error!("backup: cannot record the failure for the owner: {e}");
                        }
                    }
                    wait = RETRY.as_millis() as i64;
                }
            }
        }
    }

    /// Write a copy now and drop the copies past the newest `keep`; the
    /// copy's name.
    fn take(&self, db: &Store) -> Result<String, String> {
        copies(&self.dir)?;
        let name = name_now();
        db.backup(&self.dir.join(&name), &self.paths.kept_with_backups()).map_err(|e| {
            let read_only = e.to_string().contains("Read-only file system");
            let hint = if read_only {
                " (under the service: it may write only where config.toml said when `wasiclaw service install` \
                 ran, and only if the directory existed when it started; install again, or restart it)"
            } else {
                ""
            };
            format!("{e}{hint}")
        })?;
        // Not the copy just taken, whatever its name: after the clock went
        // back (a board that booted years ahead) it sorts first, and would
        // go at once, every time, while the copies of the wrong years stay.
        let copies = copies(&self.dir)?;
        let older = copies.iter().filter(|c| c.name != name);
        for old in older.take(copies.len().saturating_sub(self.keep.max(1))) {
            remove(&self.dir.join(&old.name));
        }
        // A copy that did not finish (the daemon stopped mid-copy).
        for entry in std::fs::read_dir(&self.dir).map_err(|e| e.to_string())?.filter_map(Result::ok) {
            let file = entry.file_name();
            let stem = file.to_str().and_then(|f| f.strip_suffix(".partial"));
            if stem.is_some_and(|s| time_of(&format!("{s}.redb")).is_some()) {
                remove(&entry.path());
            }
        }
        Ok(name)
    }
}

/// The name of a copy taken now.
pub fn name_now() -> String {
    format!("{PREFIX}{}.redb", jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"))
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!("backup: cannot remove {}: {e}", path.display());
    }
}

/// The time a copy's file name stands for, if it is one of ours.
fn time_of(name: &str) -> Option<i64> {
    let stamp = name.strip_prefix(PREFIX)?.strip_suffix("Z.redb")?;
    let (date, time) = stamp.split_once('T')?;
    if date.len() != 8 || time.len() != 6 || !stamp.bytes().all(|b| b.is_ascii_digit() || b == b'T') {
        return None;
    }
    let n = |s: &str| s.parse::<i16>().ok();
    let (y, mo, d) = (n(&date[..4])?, n(&date[4..6])? as i8, n(&date[6..])? as i8);
    let (h, mi, s) = (n(&time[..2])? as i8, n(&time[2..4])? as i8, n(&time[4..])? as i8);
    let at = jiff::civil::DateTime::new(y, mo, d, h, mi, s, 0).ok()?;
    Some(at.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp().as_millisecond())
}

/// The copies in `dir`, oldest first, or why it cannot be read.
pub fn copies(dir: &Path) -> Result<Vec<Copy>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("{} does not exist (is its drive mounted?); wasiclaw does not create it", dir.display())
        }
        std::io::ErrorKind::NotADirectory => format!("{} is not a directory", dir.display()),
        _ => format!("{}: {e}", dir.display()),
    })?;
    let mut out: Vec<Copy> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some(Copy { time_ms: time_of(&name)?, name })
        })
        .collect();
    out.sort_by_key(|c| c.time_ms);
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// A clock that went back names the new copy as the oldest: it is kept,
    /// and the copies named in the wrong years go, the earliest first.
    #[test]
    fn the_copy_just_taken_is_kept_when_the_clock_went_back() {
        let (state, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let db = crate::store::Store::open(&state.path().join("wasiclaw.redb"), &[]).unwrap();
        let ahead = ["wasiclaw-20310601T090000Z.redb", "wasiclaw-20310602T090000Z.redb"];
        for name in ahead {
            std::fs::write(dir.path().join(name), b"a copy").unwrap();
        }
        let backups = super::Backups {
            dir: dir.path().to_path_buf(),
            every: std::time::Duration::from_secs(3600),
            keep: 2,
            owner_chat: None,
            paths: crate::config::Paths::new(state.path().to_path_buf()),
            failing: Default::default(),
        };
        let taken = backups.take(&db).unwrap();
        let left: Vec<String> = super::copies(dir.path()).unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(left, [taken, ahead[1].to_string()]);
    }

    #[test]
    fn only_our_names_are_copies() {
        let t = super::time_of("wasiclaw-20261204T041400Z.redb").unwrap();
        assert_eq!(jiff::Timestamp::from_millisecond(t).unwrap().to_string(), "2026-12-04T04:14:00Z");
        for other in [
            "wasiclaw.redb",
            "wasiclaw-20261204T041400Z.redb.bak",
            "wasiclaw-2026120T041400Z.redb",
            "wasiclaw-20261304T041400Z.redb",
            "my-20261204T041400Z.redb",
        ] {
            assert_eq!(super::time_of(other), None, "{other}");
        }
    }
}
