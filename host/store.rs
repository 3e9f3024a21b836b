//! The one redb database file and its own tables: grants (and "always"
//! answers), per-skill kv with its usage, and the audit log. Every other
//! feature keeps its tables in the same file, in its own module (session,
//! memory, jobs, pairing, queue), and brings them at open (`Tables`).
//!
//! Invariants:
//! - Every write is one committed transaction before the caller is told it
//!   succeeded. A component's kv writes are staged in its call (`KvStage`:
//!   the call reads them back, no other call sees them) and applied with the
//!   call's audit records in its one durable commit (`Store::end_call`), so
//!   a call costs one write transaction and one fsync, whatever it writes.
//!   The kv quota is checked as each write is staged and again, exactly,
//!   in that commit.
//! - Every durable commit goes through `Store::commit`, which counts them
//!   (`tests/layers.rs` checks that no other file commits).
//! - Grant records are cached in memory; only `update_grant` writes them
//!   and `forget_component` removes them, each updating the cache after
//!   its commit (a reader fills the cache under the same lock, so it never
//!   caches a record from before). redb locks the file to one process, so
//!   no other writer can make it stale.
//! - kv keys are namespaced by skill name so one skill can never address
//!   another's keys; which is also why the CLI goes through the daemon
//!   while it runs.

use crate::config::AuditConfig;
use crate::grants::GrantRecord;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants");
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Per component: (keys, bytes) in its kv namespace, kept in the same
/// transaction as every kv write so the quota holds exactly.
const KV_USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("kv_usage");
/// Tool name (`SKILL.TOOL`, or a host tool's) → when the owner answered
/// "always" to it (see `approvals`).
const ALWAYS: TableDefinition<&str, i64> = TableDefinition::new("approvals");
/// Script skill name → sha256 of the source the agent last proposed under
/// it: its draft, which it may revise (kept across restarts).
const DRAFTS: TableDefinition<&str, &str> = TableDefinition::new("script_drafts");

/// Why the database failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds it.
    #[error("the database {0} is in use by another wasiclaw process; if `wasiclaw run` is starting, retry in a moment")]
    Locked(String),
    /// The database file cannot be opened: damaged, unreadable, or of a
    /// format this build does not read.
    #[error("cannot open the database {path}: {why}; {fix}")]
    Open {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
        /// What to do.
        fix: String,
    },
    /// redb failed.
    #[error("database error: {}", describe(.0))]
    Db(redb::Error),
    /// A stored record is not what it should be.
    #[error("corrupt record in the database: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// A quota would be exceeded.
    #[error("{0}")]
    Quota(String),
    /// A backup could not be written.
    #[error("backup failed: {0}")]
    Backup(String),
    /// A backup could not be restored; the database is as it was.
    #[error("nothing was restored: {0}")]
    Restore(String),
}

/// The owner's files a backup carries (see `config::BACKED_UP_FILES`),
/// by name; only in the copy, never in the live database.
const BACKUP_FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("backup_files");

/// What `Store::restore` did.
#[derive(Debug)]
pub struct Restored {
    /// Where the database it replaced is kept, if there was one.
    pub kept: Option<PathBuf>,
    /// The files the backup carried, by name, as they were when it was taken.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Set once the database file failed an I/O (a full disk, a failing
/// card). redb then refuses every later read and write until the file is
/// opened again, which the daemon cannot do in place: it exits for its
/// service manager to start it again ([`io_failure`]). Per process, as the
/// daemon is: one database per process.
static IO_FAILURE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static IO_FAILED: tokio::sync::Notify = tokio::sync::Notify::const_new();

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) && IO_FAILURE.set(describe(&e)).is_ok() {
            IO_FAILED.notify_one();
        }
        StoreError::Db(e)
    }
}

/// Wait until the database file fails an I/O; then why, in words.
pub async fn io_failure() -> String {
    loop {
        if let Some(why) = IO_FAILURE.get() {
            return why.clone();
        }
        IO_FAILED.notified().await;
    }
}

/// Whether `io` says the disk (or the file's size limit) is full.
fn is_full(io: &std::io::Error) -> bool {
    matches!(
        io.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::FileTooLarge | std::io::ErrorKind::QuotaExceeded
    )
}

/// A redb error in words; a full disk said plainly.
fn describe(e: &redb::Error) -> String {
    match e {
        redb::Error::Io(io) if is_full(io) => format!("the disk is full ({io})"),
        other => other.to_string(),
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(impl From<$t> for StoreError {
        fn from(e: $t) -> Self { StoreError::from(redb::Error::from(e)) }
    })*};
}
redb_errors!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError, redb::SetDurabilityError);

/// Why a database file would not open, and what to do. The file is left
/// as it is: it may be the only copy of the owner's memories.
fn open_failure(e: redb::DatabaseError) -> (String, &'static str) {
    use redb::{DatabaseError, StorageError};
    const RESTORE: &str = "to go on, stop wasiclaw and run `wasiclaw restore BACKUP` with a copy made by \
                           `wasiclaw backup` or [storage] backup_dir (it keeps this file aside for a bug report)";
    let damaged =
        |detail: String| (format!("it is damaged ({detail}), maybe by a power cut or a failing card"), RESTORE);
    match e {
        DatabaseError::Storage(StorageError::Corrupted(detail)) => damaged(detail),
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            damaged(io.to_string())
        }
        DatabaseError::Storage(StorageError::Io(io)) if is_full(&io) => (
            format!("the disk is full ({io})"),
            "free some space on it (`wasiclaw doctor` shows how much is free); the service starts wasiclaw again by itself",
        ),
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() == std::io::ErrorKind::ReadOnlyFilesystem => (
            format!("its filesystem is read-only ({io})"),
            "a card with errors is often remounted read-only by the kernel: check `dmesg`, repair it (fsck), and remount it",
        ),
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            (io.to_string(), "the file and the state dir must belong to the user running wasiclaw")
        }
        DatabaseError::UpgradeRequired(version) => (
            format!("it is in an older file format (version {version}) than this build reads"),
            "run the wasiclaw that wrote it",
        ),
        other => (other.to_string(), RESTORE),
    }
}

/// One capability use, allowed or denied.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    /// Its id.
    #[serde(default)]
    pub id: u64,
    /// Unix time in milliseconds.
    pub time_ms: i64,
    /// The component.
    pub skill: String,
    /// Its sha256.
    pub sha256: String,
    /// The capability used (http, kv, secret, ...).
    pub capability: String,
    /// What it was used on.
    pub target: String,
    /// Whether the host allowed it.
    pub allowed: bool,
    /// Why, or more about it.
    #[serde(default)]
    pub detail: String,
}

/// Creates a feature's tables in the database file (in one transaction
/// with every other's at open, so a read never meets a missing table).
pub type Tables = fn(&redb::WriteTransaction) -> Result<(), StoreError>;

/// `skill`'s kv usage: the kept figure, or counted once for a namespace
/// written before usage was kept.
fn kv_usage_in(
    usage: &impl ReadableTable<&'static str, (u64, u64)>,
    kv: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    skill: &str,
) -> Result<(u64, u64), StoreError> {
    if let Some(kept) = usage.get(skill)? {
        return Ok(kept.value());
    }
    let mut counted = (0, 0);
    for entry in kv.range((skill, "")..)? {
        let (k, v) = entry?;
        let (owner, key) = k.value();
        if owner != skill {
            break;
        }
        counted = (counted.0 + 1, counted.1 + (key.len() + v.value().len()) as u64);
    }
    Ok(counted)
}

/// The next id of an id-keyed table: one more than the last.
pub(crate) fn next_id<V: redb::Value + 'static>(table: &impl ReadableTable<u64, V>) -> Result<u64, StoreError> {
    Ok(table.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1))
}

/// A call's kv writes, kept in memory until its end commit
/// (`Store::end_call`), so a call costs one write transaction and no other
/// call reads what is not yet durable. Bounded by the quota: each staged
/// write is checked against it, so the values staged total at most `kv_mb`;
/// and a call touches at most twice `kv_keys` distinct keys (it may delete
/// every key it has and write as many new ones), so deletes of keys that
/// do not exist, which change no usage, cannot pile up either.
#[derive(Default)]
pub struct KvStage {
    writes: BTreeMap<String, Staged>,
    /// What applying `writes` now would add to the committed usage.
    keys: i64,
    bytes: i64,
}

struct Staged {
    /// The new value, or `None` for a delete.
    value: Option<Vec<u8>>,
    /// The committed size (key and value) when the call first touched it.
    was: Option<u64>,
}

impl KvStage {
    /// What the call staged for `key`: `None` if untouched, `Some(None)` if
    /// deleted.
    pub fn get(&self, key: &str) -> Option<Option<&[u8]>> {
        self.writes.get(key).map(|s| s.value.as_deref())
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// What writing `value` (or deleting, `None`) over a committed size `was`
/// changes: (keys, bytes).
fn change(key: &str, value: Option<&[u8]>, was: Option<u64>) -> (i64, i64) {
    let now = value.map(|v| (key.len() + v.len()) as i64);
    (i64::from(now.is_some()) - i64::from(was.is_some()), now.unwrap_or(0) - was.unwrap_or(0) as i64)
}

/// A component's kv limits (`[limits] kv_keys`, `kv_mb`).
#[derive(Clone, Copy, Debug)]
pub struct KvQuota {
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

impl KvQuota {
    /// The distinct keys one call may write or delete.
    fn touched(self) -> u64 {
        self.keys.saturating_mul(2)
    }

    /// Why `keys` keys of `bytes` bytes do not fit, if they do not.
    fn check(self, keys: i64, bytes: i64) -> Result<(), String> {
        if keys > self.keys as i64 || bytes > self.bytes as i64 {
            return Err(format!(
                "kv quota: this would make {keys} keys and {bytes} bytes; the limits are {} keys and {} bytes ([limits] kv_keys, kv_mb)",
                self.keys, self.bytes
            ));
        }
        Ok(())
    }
}

/// The committed size (key and value) of `skill`'s `key`.
fn kv_size(
    kv: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    skill: &str,
    key: &str,
) -> Result<Option<u64>, StoreError> {
    Ok(kv.get((skill, key))?.map(|v| (key.len() + v.value().len()) as u64))
}

/// The database.
pub struct Store {
    /// Other modules keep their own tables in the same file (see memory.rs).
    pub(crate) db: Database,
    /// Bumped after a commit that queues work for the channel workers
    /// (inbox, outbox); a `watch` so a wake-up is never missed.
    pub changes: tokio::sync::watch::Sender<u64>,
    /// `[audit]`: how long, and how many, audit records are kept.
    pub audit_retention: Mutex<AuditConfig>,
    /// The database file.
    path: std::path::PathBuf,
    /// Durable commits made, for tests of "one commit per call".
    commits: AtomicU64,
    /// Grant records read so far (`None`: the component has none).
    grants: Mutex<HashMap<String, Option<GrantRecord>>>,
}

/// The time now, in Unix ms.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Store {
    /// Open (or create) the database with its own tables and those that
    /// `tables` create (each feature's, see `runtime::TABLES`).
    pub fn open(path: &Path, tables: &[Tables]) -> Result<Self, StoreError> {
        Self::open_with_cache(path, crate::config::StorageConfig::default().cache_mb, tables)
    }

    /// Open with redb's page cache bounded to `cache_mb` (its own default
    /// is 1 GiB, which a long-running daemon on a board would grow into).
    pub fn open_with_cache(path: &Path, cache_mb: u64, tables: &[Tables]) -> Result<Self, StoreError> {
        let db = redb::Builder::new().set_cache_size((cache_mb as usize) << 20).create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.display().to_string()),
            other => {
                let (why, fix) = open_failure(other);
                StoreError::Open { path: path.display().to_string(), why, fix: fix.into() }
            }
        })?;
        // Creating missing tables needs no fsync of its own: if it is lost,
        // the next open creates them again, and every later durable commit
        // carries it. An open then costs a board's slow storage nothing.
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::None)?;
        txn.open_table(GRANTS)?;
        txn.open_table(KV)?;
        txn.open_table(AUDIT)?;
        txn.open_table(KV_USAGE)?;
        txn.open_table(ALWAYS)?;
        txn.open_table(DRAFTS)?;
        for create in tables {
            create(&txn)?;
        }
        txn.commit()?;
        Ok(Store {
            db,
            changes: tokio::sync::watch::Sender::new(0),
            audit_retention: Mutex::new(AuditConfig::default()),
            path: path.to_path_buf(),
            commits: AtomicU64::new(0),
            grants: Mutex::default(),
        })
    }

    /// Commit a write transaction durably (the one place that does).
    /// Its fsync can take a slow SD card hundreds of milliseconds, so on an
    /// async worker of a multi-thread runtime the worker's other tasks move
    /// to another thread meanwhile (`block_in_place`): with one core there
    /// is one worker, and timers, channels and the gateway would wait too.
    pub(crate) fn commit(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        match flavor {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| txn.commit())?,
            _ => txn.commit()?,
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Commit a transaction from `write_deferred` (no fsync, not counted).
    pub(crate) fn commit_deferred(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        Ok(txn.commit()?)
    }

    /// Durable commits made since the database was opened.
    pub fn durable_commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// A write transaction that commits without an fsync: its writes are
    /// visible at once and become durable with the next durable commit.
    pub(crate) fn write_deferred(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        Ok(txn)
    }

    /// Read-modify-write one JSON record keyed by id, in one transaction;
    /// false if there is no such record.
    pub(crate) fn update_record<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        id: u64,
        f: impl FnOnce(&mut T),
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let found = {
            let mut table = txn.open_table(table)?;
            let current = table.get(id)?.map(|v| v.value().to_vec());
            match current {
                None => false,
                Some(bytes) => {
                    let mut record: T = serde_json::from_slice(&bytes)?;
                    f(&mut record);
                    table.insert(id, serde_json::to_vec(&record)?.as_slice())?;
                    true
                }
            }
        };
        self.commit(txn)?;
        Ok(found)
    }

    /// Every JSON record of an id-keyed table, in id order.
    pub(crate) fn all_records<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<u64, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(table)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(serde_json::from_slice(entry?.1.value())?);
        }
        Ok(out)
    }

    /// Write a consistent copy of the database to `to` while it is in use:
    /// holding the write lock, no commit can land mid-copy, so the copy is
    /// the last committed state. The copy is checked by opening it, `files`
    /// (the owner's settings, by name) are written into it, and only then
    /// is it renamed into place. Returns its size.
    pub fn backup(&self, to: &Path, files: &[(String, Vec<u8>)]) -> Result<u64, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| StoreError::Backup(format!("{}: {e}", to.display()));
        let tmp = to.with_extension("partial");
        // The copy is the owner's alone from its first byte, and never a
        // file or link someone else left at its name (a shared /tmp):
        // copying onto one would write the memories where they can read
        // them, or overwrite what a link points at.
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(|e| {
            match e.kind() {
                std::io::ErrorKind::AlreadyExists => StoreError::Backup(format!(
                    "{} exists (a backup that did not finish, or someone else's file): remove it and run again",
                    tmp.display()
                )),
                _ => io(e),
            }
        })?;
        let copied = (|| {
            {
                // Writes wait only while the file is copied into the page
                // cache, not for the copy's fsync to a slow backup drive
                // (past the kernel's dirty-page limit, a big database's
                // copy waits for the drive too).
                let hold = self.db.begin_write()?;
                std::io::copy(&mut std::fs::File::open(&self.path).map_err(io)?, &mut out).map_err(io)?;
                hold.abort()?;
            }
            out.sync_all().map_err(io)?;
            let mut copy =
                Database::open(&tmp).map_err(|e| StoreError::Backup(format!("the copy does not open: {e}")))?;
            if !copy.check_integrity().map_err(|e| StoreError::Backup(format!("checking the copy: {e}")))? {
                return Err(StoreError::Backup("the copy failed its integrity check".into()));
            }
            let txn = copy.begin_write()?;
            {
                let mut table = txn.open_table(BACKUP_FILES)?;
                for (name, bytes) in files {
                    table.insert(name.as_str(), bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&tmp, to) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        Ok(std::fs::metadata(to).map_err(io)?.len())
    }

    /// Put the backup `from` in the place of the database at `live`, which
    /// no process may have open: it is copied and checked beside the
    /// database first (redb may repair a file it opens, and the backup must
    /// stay as it was), then renamed into place, so a bad backup leaves the
    /// database as it was. The database it replaces is kept beside it; the
    /// files the backup carries are returned, for the caller to put back.
    pub fn restore(live: &Path, from: &Path, tables: &[Tables]) -> Result<Restored, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |why: String| StoreError::Restore(why);
        let io = |what: &Path, e: std::io::Error| fail(format!("{}: {e}", what.display()));
        if std::fs::canonicalize(from).ok() == std::fs::canonicalize(live).ok() {
            return Err(fail(format!("{} is the database itself", from.display())));
        }
        // Its lock (redb's own) is held to the end: a daemon that starts
        // meanwhile cannot open either file.
        let held = match std::fs::File::open(live) {
            Ok(file) => {
                file.try_lock().map_err(|_| StoreError::Locked(live.display().to_string()))?;
                Some(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(live, e)),
        };
        let staged = live.with_extension("restoring");
        let _ = std::fs::remove_file(&staged);
        let checked = (|| {
            let mut source = std::fs::File::open(from).map_err(|e| io(from, e))?;
            let mut copy = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&staged)
                .map_err(|e| io(&staged, e))?;
            std::io::copy(&mut source, &mut copy).map_err(|e| io(&staged, e))?;
            copy.sync_all().map_err(|e| io(&staged, e))?;
            let not_ours =
                |e: String| fail(format!("{} is not a wasiclaw database, or is damaged ({e})", from.display()));
            let mut db = Database::open(&staged).map_err(|e| not_ours(e.to_string()))?;
            if !db.check_integrity().map_err(|e| not_ours(e.to_string()))? {
                return Err(not_ours("it failed its integrity check".into()));
            }
            // The files it carries leave the database for the state dir.
            let txn = db.begin_write()?;
            let mut files = Vec::new();
            if txn.list_tables()?.any(|t| t.name() == BACKUP_FILES.name()) {
                for entry in txn.open_table(BACKUP_FILES)?.iter()? {
                    let (name, bytes) = entry?;
                    files.push((name.value().to_string(), bytes.value().to_vec()));
                }
                txn.delete_table(BACKUP_FILES)?;
            }
            txn.commit()?;
            drop(db);
            // Its tables made, as an open by this build makes them.
            drop(Store::open(&staged, tables)?);
            Ok(files)
        })();
        let files = match checked {
            Ok(files) => files,
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                return Err(e);
            }
        };
        let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
        let kept = held.as_ref().map(|_| live.with_extension(format!("redb.replaced-{stamp}")));
        if let Some(kept) = &kept {
            std::fs::rename(live, kept).map_err(|e| io(live, e))?;
        }
        if let Err(e) = std::fs::rename(&staged, live) {
            // Leave the database as it was.
            if let Some(kept) = &kept {
                let _ = std::fs::rename(kept, live);
            }
            let _ = std::fs::remove_file(&staged);
            return Err(io(live, e));
        }
        if let Some(dir) = live.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
        }
        Ok(Restored { kept, files })
    }

    /// Reclaim free pages (the file never shrinks on its own).
    pub fn compact(&mut self) -> Result<bool, StoreError> {
        self.db.compact().map_err(|e| StoreError::from(redb::Error::from(e)))
    }

    /// The grant record of a component, if any (from memory after the
    /// first read: a tool call reads no table for it).
    pub fn grant(&self, skill: &str) -> Result<Option<GrantRecord>, StoreError> {
        // Read and cached under the lock: `update_grant` caches its record
        // after its commit, so a read from before that commit can never be
        // cached after it.
        let mut cache = self.grants.lock().unwrap();
        if let Some(cached) = cache.get(skill) {
            return Ok(cached.clone());
        }
        let txn = self.db.begin_read()?;
        let record: Option<GrantRecord> = match txn.open_table(GRANTS)?.get(skill)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        };
        cache.insert(skill.into(), record.clone());
        Ok(record)
    }

    /// The names of the components with a grant record, sorted.
    pub fn granted(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut names = Vec::new();
        for entry in txn.open_table(GRANTS)?.iter()? {
            names.push(entry?.0.value().to_string());
        }
        Ok(names)
    }

    /// After a commit that removed `skill`'s grant record: cache its absence.
    pub(crate) fn grant_removed(&self, skill: &str) {
        self.grants.lock().unwrap().insert(skill.into(), None);
    }

    /// Read-modify-write a grant record in one transaction. When it moves
    /// the record to another build, the owner's "always" answers for the
    /// component's tools go in the same commit (they were given to what the
    /// old build's tools did), unless carry-over was already on: that build
    /// ran with them, by the owner's choice. Returns the record and how many
    /// answers went.
    pub fn update_grant(
        &self,
        skill: &str,
        f: impl FnOnce(&mut GrantRecord),
    ) -> Result<(GrantRecord, usize), StoreError> {
        let txn = self.db.begin_write()?;
        let (record, always) = {
            let mut table = txn.open_table(GRANTS)?;
            let mut record: GrantRecord = match table.get(skill)? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => GrantRecord::default(),
            };
            let (before, carried) = (record.sha256.clone(), record.carry_over);
            f(&mut record);
            table.insert(skill, serde_json::to_vec(&record)?.as_slice())?;
            let always = if before.is_empty() || before == record.sha256 || carried {
                0
            } else {
                forget_always_in(&txn, skill)?
            };
            (record, always)
        };
        self.commit(txn)?;
        self.grants.lock().unwrap().insert(skill.into(), Some(record.clone()));
        Ok((record, always))
    }

    /// A kv value of `skill`.
    pub fn kv_get(&self, skill: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        Ok(table.get((skill, key))?.map(|v| v.value().to_vec()))
    }

    /// Keys and bytes (keys plus values) in `skill`'s namespace.
    pub fn kv_usage(&self, skill: &str) -> Result<(u64, u64), StoreError> {
        let txn = self.db.begin_read()?;
        kv_usage_in(&txn.open_table(KV_USAGE)?, &txn.open_table(KV)?, skill)
    }

    /// Stage `value` for `key` in a call's `stage` unless the committed
    /// usage with everything staged would pass `quota`.
    pub fn kv_stage(
        &self,
        skill: &str,
        stage: &mut KvStage,
        key: &str,
        value: Option<Vec<u8>>,
        quota: KvQuota,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        let (was, before) = match stage.writes.get(key) {
            Some(staged) => (staged.was, change(key, staged.value.as_deref(), staged.was)),
            None if stage.writes.len() as u64 >= quota.touched() => {
                return Err(StoreError::Quota(format!(
                    "kv: this call already wrote or deleted {} distinct keys, the most one call may (twice [limits] kv_keys)",
                    stage.writes.len()
                )));
            }
            None => (kv_size(&table, skill, key)?, (0, 0)),
        };
        let after = change(key, value.as_deref(), was);
        let total = (stage.keys - before.0 + after.0, stage.bytes - before.1 + after.1);
        if value.is_some() {
            let (keys, bytes) = kv_usage_in(&txn.open_table(KV_USAGE)?, &table, skill)?;
            quota.check(keys as i64 + total.0, bytes as i64 + total.1).map_err(StoreError::Quota)?;
        }
        (stage.keys, stage.bytes) = total;
        stage.writes.insert(key.to_string(), Staged { value, was });
        Ok(())
    }

    /// End a call in one durable commit: apply its staged kv writes (all of
    /// them, or none if the quota no longer holds because another call of
    /// the same component committed first: then `Ok(Some(why))` and a
    /// denied record from `dropped`) and store its audit records.
    pub fn end_call(
        &self,
        mut records: Vec<AuditRecord>,
        (skill, stage, quota): (&str, KvStage, KvQuota),
        dropped: impl FnOnce(&str) -> AuditRecord,
    ) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_write()?;
        let mut refused = None;
        if !stage.is_empty() {
            let mut table = txn.open_table(KV)?;
            let mut usage = txn.open_table(KV_USAGE)?;
            // Counted again here, inside the write: the figures staged
            // against may be stale by now.
            let (keys, bytes) = kv_usage_in(&usage, &table, skill)?;
            let (mut keys, mut bytes) = (keys as i64, bytes as i64);
            for (key, staged) in &stage.writes {
                let (k, b) = change(key, staged.value.as_deref(), kv_size(&table, skill, key)?);
                (keys, bytes) = (keys + k, bytes + b);
            }
            match quota.check(keys, bytes) {
                Err(why) => {
                    records.push(dropped(&why));
                    refused = Some(why);
                }
                Ok(()) => {
                    for (key, staged) in &stage.writes {
                        match &staged.value {
                            Some(value) => drop(table.insert((skill, key.as_str()), value.as_slice())?),
                            None => drop(table.remove((skill, key.as_str()))?),
                        }
                    }
                    usage.insert(skill, (keys as u64, bytes as u64))?;
                }
            }
        }
        self.append_audit(&txn, records)?;
        self.commit(txn)?;
        Ok(refused)
    }

    /// Keys of `skill` starting with `prefix`, at most `limit`, as the
    /// call that staged `stage` sees them.
    pub fn kv_keys(&self, skill: &str, prefix: &str, limit: usize, stage: &KvStage) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        let mut keys = std::collections::BTreeSet::new();
        for entry in table.range((skill, prefix)..)? {
            let (k, _) = entry?;
            let (owner, key) = k.value();
            if owner != skill || !key.starts_with(prefix) || keys.len() >= limit {
                break;
            }
            if !matches!(stage.get(key), Some(None)) {
                keys.insert(key.to_string());
            }
        }
        let staged = stage.writes.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix));
        keys.extend(staged.filter(|(_, s)| s.value.is_some()).map(|(k, _)| k.clone()));
        Ok(keys.into_iter().take(limit).collect())
    }

    /// Store audit records in one durable commit; returns the last id.
    pub fn audit(&self, records: Vec<AuditRecord>) -> Result<u64, StoreError> {
        let txn = self.db.begin_write()?;
        let id = self.append_audit(&txn, records)?;
        self.commit(txn)?;
        Ok(id)
    }

    fn append_audit(&self, txn: &WriteTransaction, records: Vec<AuditRecord>) -> Result<u64, StoreError> {
        let mut table = txn.open_table(AUDIT)?;
        // Pruning removes only the oldest, so the ids run on from here.
        let first = next_id(&table)?;
        let mut id = 0;
        for (n, mut record) in records.into_iter().enumerate() {
            id = first + n as u64;
            record.id = id;
            table.insert(id, serde_json::to_vec(&record)?.as_slice())?;
            // Prune now and then rather than on every write.
            if id % 256 == 0 {
                self.prune_audit(&mut table, id, record.time_ms)?;
            }
        }
        Ok(id)
    }

    fn prune_audit(&self, table: &mut redb::Table<u64, &[u8]>, id: u64, now_ms: i64) -> Result<(), StoreError> {
        let AuditConfig { keep_days, max_records } = self.audit_retention.lock().unwrap().clone();
        let cutoff = now_ms - (keep_days as i64) * 86_400_000;
        let keep_from = id.saturating_sub(max_records.saturating_sub(1));
        loop {
            let first = table.first()?.map(|(k, v)| (k.value(), serde_json::from_slice::<AuditRecord>(v.value())));
            let Some((k, old)) = first else { return Ok(()) };
            if k >= keep_from && old?.time_ms >= cutoff {
                return Ok(());
            }
            table.remove(k)?;
        }
    }

    /// The newest `limit` audit records (of one skill, if given), oldest first.
    pub fn audit_tail(&self, skill: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for entry in table.iter()?.rev() {
            let record: AuditRecord = serde_json::from_slice(entry?.1.value())?;
            if skill.is_none_or(|s| s == record.skill) {
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Audit records kept.
    pub fn audit_count(&self) -> Result<u64, StoreError> {
        Ok(self.db.begin_read()?.open_table(AUDIT)?.len()?)
    }
}

/// What a component removed (`skills remove`) leaves in the database, or
/// left before `--erase` took it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Forgot {
    /// It had a grant record (now gone).
    pub grant: bool,
    /// The owner's "always" answers for its tools (now gone).
    pub always: usize,
    /// Keys in its kv namespace.
    pub kv_keys: u64,
    /// Bytes (keys plus values) in its kv namespace.
    pub kv_bytes: u64,
    /// Memories it saved (erased: those the model set aside too).
    pub memories: u64,
    /// A channel's approved pairings (now gone, as its grant).
    #[serde(default)]
    pub pairings: usize,
    /// A channel's conversations, `NAME:CHAT`.
    #[serde(default)]
    pub conversations: usize,
    /// Messages through a channel waiting for the agent or to be sent.
    #[serde(default)]
    pub waiting: usize,
}

/// Forget component `name` in `txn`: its grant and the owner's "always"
/// answers for its tools, so the name added again asks again; with
/// `erase`, its kv namespace too. Its memories are the memory module's.
pub(crate) fn forget_component_in(txn: &WriteTransaction, name: &str, erase: bool) -> Result<Forgot, StoreError> {
    let grant = txn.open_table(GRANTS)?.remove(name)?.is_some();
    txn.open_table(DRAFTS)?.remove(name)?;
    let always = forget_always_in(txn, name)?;
    let (kv_keys, kv_bytes) = kv_usage_in(&txn.open_table(KV_USAGE)?, &txn.open_table(KV)?, name)?;
    if erase {
        // `NAME\0` is the first owner after NAME: the range is its keys alone.
        let next = format!("{name}\0");
        txn.open_table(KV)?.retain_in((name, "")..(next.as_str(), ""), |_, _| false)?;
        txn.open_table(KV_USAGE)?.remove(name)?;
    }
    Ok(Forgot { grant, always, kv_keys, kv_bytes, ..Forgot::default() })
}

/// Drop the owner's "always" answers for component `name`'s tools in
/// `txn`; how many there were.
fn forget_always_in(txn: &WriteTransaction, name: &str) -> Result<usize, StoreError> {
    let prefix = format!("{name}.");
    Ok(txn.open_table(ALWAYS)?.extract_if(|tool, _| tool.starts_with(&prefix))?.count())
}

impl Store {
    /// The sha256 of the source the agent last proposed as script `name`.
    pub fn draft(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.db.begin_read()?.open_table(DRAFTS)?.get(name)?.map(|v| v.value().to_string()))
    }

    /// Names of the agent's drafts (some may be approved or gone since).
    pub fn drafts(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DRAFTS)?;
        table.iter()?.map(|e| Ok(e?.0.value().to_string())).collect()
    }

    /// Record that the agent proposed the source of `sha256` as `name`.
    pub fn set_draft(&self, name: &str, sha256: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(DRAFTS)?.insert(name, sha256)?;
        self.commit(txn)?;
        Ok(())
    }

    /// Whether the owner answered "always" for `tool`.
    pub fn approved_always(&self, tool: &str) -> Result<bool, StoreError> {
        Ok(self.db.begin_read()?.open_table(ALWAYS)?.get(tool)?.is_some())
    }

    /// Remember that the owner answered "always" for `tool`.
    pub fn approve_always(&self, tool: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(ALWAYS)?.insert(tool, now_ms())?;
        self.commit(txn)?;
        Ok(())
    }

    /// Every "always" answer: tool and when it was given.
    pub fn approvals(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ALWAYS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// Forget an "always" answer; false if there was none.
    pub fn approval_revoke(&self, tool: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let found = txn.open_table(ALWAYS)?.remove(tool)?.is_some();
        self.commit(txn)?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--erase` takes one component's kv in a range of the table, and no
    /// key of a name beside it in the key order.
    #[test]
    fn erasing_a_components_kv_takes_its_keys_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(&dir.path().join("db"), &[]).unwrap();
        let quota = KvQuota { keys: 10, bytes: 1 << 20 };
        let names = ["a", "a-b", "a_", "ab", "notes", "notes-2"];
        for name in names {
            let mut stage = KvStage::default();
            for key in ["", "k", "\0"] {
                db.kv_stage(name, &mut stage, key, Some(b"v".to_vec()), quota).unwrap();
            }
            db.end_call(Vec::new(), (name, stage, quota), |_| unreachable!("within the quota")).unwrap();
        }
        for gone in ["a", "notes"] {
            let txn = db.db.begin_write().unwrap();
            assert_eq!(forget_component_in(&txn, gone, true).unwrap().kv_keys, 3);
            txn.commit().unwrap();
        }
        for name in names {
            let kept = ["", "k", "\0"].iter().filter(|k| db.kv_get(name, k).unwrap().is_some()).count();
            let usage = db.kv_usage(name).unwrap().0;
            let expect = if matches!(name, "a" | "notes") { 0 } else { 3 };
            assert_eq!((kept, usage), (expect, expect as u64), "{name}");
        }
    }

    /// Each way the file can fail to open says what is wrong and what to
    /// do about it.
    #[test]
    fn an_open_failure_says_what_to_do() {
        use std::io::{Error, ErrorKind};
        let io = |kind| redb::DatabaseError::Storage(redb::StorageError::Io(Error::from(kind)));
        let (why, fix) = open_failure(io(ErrorKind::StorageFull));
        assert!(why.starts_with("the disk is full") && fix.contains("free some space"), "{why}; {fix}");
        let (why, fix) = open_failure(io(ErrorKind::ReadOnlyFilesystem));
        assert!(why.contains("read-only") && fix.contains("dmesg"), "{why}; {fix}");
        let (why, fix) = open_failure(io(ErrorKind::PermissionDenied));
        assert!(fix.contains("must belong to the user running wasiclaw"), "{why}; {fix}");
        let (why, fix) = open_failure(redb::DatabaseError::Storage(redb::StorageError::Corrupted("a page".into())));
        assert!(why.starts_with("it is damaged (a page)") && fix.contains("wasiclaw restore"), "{why}; {fix}");
        let (why, fix) = open_failure(redb::DatabaseError::UpgradeRequired(2));
        assert!(why.contains("older file format") && fix.contains("wrote it"), "{why}; {fix}");
    }
}
