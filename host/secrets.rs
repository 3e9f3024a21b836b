//! The secrets store: `<state-dir>/secrets.json`, mode 0600, never in the
//! config file and never handed to a component. The egress hook and the
//! `crypto` import read it on each use, so `wasiclaw secrets set` takes
//! effect at once, daemon or not.
//!
//! Writes go to a 0600 temp file that is renamed into place, so a crash
//! never leaves a half-written store. Every read-modify-write holds an
//! exclusive `flock` on `secrets.json.lock`, so the daemon and a CLI
//! command writing at once (say, both creating the gateway token) neither
//! lose each other's change nor trip over one temp file.

use crate::grants::valid_secret_name;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Why a secret cannot be read or stored.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Not upper-case letters, digits and `_`.
    #[error("`{0}` is not a valid secret name: use upper-case letters, digits and _ (e.g. TELEGRAM_TOKEN)")]
    BadName(String),
    /// No secret by that name.
    #[error("no secret named {0}; `wasiclaw secrets list` shows the names")]
    Missing(String),
    /// An empty value.
    #[error("secret value is empty")]
    Empty,
    #[error("secrets store {path}: {source}")]
    /// The store cannot be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    #[error("secrets store {path} is corrupt: {source}")]
    /// The store is not valid JSON.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// Whether two byte strings are equal, in time that does not depend on
/// where they differ: MACs of both sides are compared, so no new
/// dependency is needed.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let mac = |bytes: &[u8]| {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(b"wasiclaw constant-time compare").expect("any key length");
        m.update(bytes);
        m
    };
    mac(a).verify(&mac(b).finalize().into_bytes()).is_ok()
}

/// A fresh random token: 32 bytes from the OS, hex-encoded.
pub fn random_token() -> Result<String, std::io::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(hex::encode(bytes))
}

/// The secret store: a 0600 JSON file in the state directory.
#[derive(Clone, Debug)]
pub struct Secrets {
    path: PathBuf,
}

impl Secrets {
    /// The store in the file `path`.
    pub fn new(path: PathBuf) -> Self {
        Secrets { path }
    }

    fn io(&self, source: std::io::Error) -> SecretsError {
        SecretsError::Io { path: self.path.clone(), source }
    }

    fn load(&self) -> Result<BTreeMap<String, String>, SecretsError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| SecretsError::Corrupt { path: self.path.clone(), source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Apply `change` to the stored map and write it back, under the lock.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<T, SecretsError>,
    ) -> Result<T, SecretsError> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(self.path.with_extension("json.lock"))
            .map_err(|e| self.io(e))?;
        // Released when `lock` is closed at the end of this function.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            return Err(self.io(std::io::Error::last_os_error()));
        }
        let mut map = self.load()?;
        let out = change(&mut map)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.io(e))?;
        file.write_all(&serde_json::to_vec_pretty(&map).expect("a map of strings serializes"))
            .and_then(|_| file.sync_all())
            .map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        Ok(out)
    }

    /// The value of secret `name`, if set.
    pub fn get(&self, name: &str) -> Result<Option<String>, SecretsError> {
        Ok(self.load()?.remove(name))
    }

    /// Store a secret.
    pub fn set(&self, name: &str, value: &str) -> Result<(), SecretsError> {
        if !valid_secret_name(name) {
            return Err(SecretsError::BadName(name.into()));
        }
        if value.is_empty() {
            return Err(SecretsError::Empty);
        }
        self.update(|map| {
            map.insert(name.into(), value.into());
            Ok(())
        })
    }

    /// The value of secret `name`, storing `make()` first if it is unset;
    /// two processes racing here both get the one value that was stored.
    pub fn get_or_insert_with(
        &self,
        name: &str,
        make: impl FnOnce() -> Result<String, std::io::Error>,
    ) -> Result<String, SecretsError> {
        if let Some(value) = self.get(name)? {
            return Ok(value);
        }
        self.update(|map| match map.get(name) {
            Some(value) => Ok(value.clone()),
            None => {
                let value = make().map_err(|e| self.io(e))?;
                map.insert(name.into(), value.clone());
                Ok(value)
            }
        })
    }

    /// Delete a secret.
    pub fn remove(&self, name: &str) -> Result<(), SecretsError> {
        self.update(|map| map.remove(name).map(drop).ok_or_else(|| SecretsError::Missing(name.into())))
    }

    /// The names of every secret (never values).
    pub fn names(&self) -> Result<Vec<String>, SecretsError> {
        Ok(self.load()?.into_keys().collect())
    }
}
