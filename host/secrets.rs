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
//!
//! **Sealed at rest.** When the process has a key (the systemd credential
//! `wasiclaw-secrets-key`, passed by `LoadCredentialEncrypted=` under the
//! service), every write seals the store with ChaCha20-Poly1305 (ring, which
//! rustls brings already) and a fresh nonce; the file names the key's id, so
//! a wrong key is told apart from a damaged file. A process without the key
//! gets [`SecretsError::Sealed`] and asks the daemon instead. The 0600 file
//! keeps other local users out; sealing also keeps out whoever gets a copy
//! of the state dir (a backup, a disk) without this machine's credential key.

use crate::grants::valid_secret_name;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The name of the systemd credential that holds the sealing key.
pub const CREDENTIAL: &str = "wasiclaw-secrets-key";

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
    /// Sealed, and this process has no key.
    #[error(
        "secrets store {0} is sealed with the service's key, which only the service has; the running daemon \
         changes it for you (start it with `systemctl start wasiclaw`)"
    )]
    Sealed(PathBuf),
    /// Sealed with another key than this process has.
    #[error(
        "secrets store {0} is sealed with another key than the credential {CREDENTIAL} holds (a rotation cut \
         short? run `wasiclaw secrets rotate` again as root)"
    )]
    WrongKey(PathBuf),
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

/// A secret's value on its way to the store: never shown by `Debug`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hidden(pub String);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hidden(..)")
    }
}

/// The key a store is sealed with: the SHA-256 of the credential's bytes,
/// so a credential of any length works.
#[derive(Clone)]
pub struct SealKey {
    key: [u8; 32],
    /// Named in the sealed file: which key sealed it.
    pub id: String,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({})", self.id)
    }
}

impl SealKey {
    /// The key made from a credential's contents.
    pub fn from_credential(bytes: &[u8]) -> Self {
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(bytes).into();
        let id = hex::encode(&sha2::Sha256::digest(key)[..8]);
        SealKey { key, id }
    }

    /// The key the service's systemd credential holds, if this process was
    /// given one (`$CREDENTIALS_DIRECTORY/wasiclaw-secrets-key`).
    pub fn from_environment() -> Option<Self> {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
        std::fs::read(Path::new(&dir).join(CREDENTIAL)).ok().map(|b| Self::from_credential(&b))
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.key).expect("a 32-byte key"))
    }
}

/// The file of a sealed store.
#[derive(Serialize, Deserialize)]
struct Sealed {
    /// The cipher, and what tells a sealed file from a plain one.
    sealed: String,
    key_id: String,
    nonce: String,
    data: String,
}

const CIPHER: &str = "chacha20-poly1305";
const AAD: &[u8] = b"wasiclaw secrets v1";

/// The secret store: a 0600 JSON file in the state directory.
#[derive(Clone, Debug)]
pub struct Secrets {
    path: PathBuf,
    key: Option<SealKey>,
}

impl Secrets {
    /// The store in the file `path`, sealed with the service's key if this
    /// process has it.
    pub fn new(path: PathBuf) -> Self {
        Secrets { path, key: SealKey::from_environment() }
    }

    /// The store in `path`, sealed with `key` (or plain with `None`).
    pub fn with_key(path: PathBuf, key: Option<SealKey>) -> Self {
        Secrets { path, key }
    }

    /// Whether this process seals what it writes.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    fn io(&self, source: std::io::Error) -> SecretsError {
        SecretsError::Io { path: self.path.clone(), source }
    }

    fn corrupt(&self, source: serde_json::Error) -> SecretsError {
        SecretsError::Corrupt { path: self.path.clone(), source }
    }

    fn load(&self) -> Result<BTreeMap<String, String>, SecretsError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.io(e)),
        };
        let Ok(sealed) = serde_json::from_slice::<Sealed>(&bytes) else {
            return serde_json::from_slice(&bytes).map_err(|e| self.corrupt(e));
        };
        let key = self.key.as_ref().ok_or_else(|| SecretsError::Sealed(self.path.clone()))?;
        if sealed.sealed != CIPHER || sealed.key_id != key.id {
            return Err(SecretsError::WrongKey(self.path.clone()));
        }
        let damaged = |why: &str| self.corrupt(serde::de::Error::custom(why));
        let nonce = B64.decode(&sealed.nonce).ok().and_then(|n| Nonce::try_assume_unique_for_key(&n).ok());
        let (Some(nonce), Ok(mut data)) = (nonce, B64.decode(&sealed.data)) else {
            return Err(damaged("its nonce or data is not base64"));
        };
        let plain =
            key.aead().open_in_place(nonce, Aad::from(AAD), &mut data).map_err(|_| damaged("it fails its check"))?;
        serde_json::from_slice(plain).map_err(|e| self.corrupt(e))
    }

    /// The file's bytes for `map`: sealed with `key`, or plain JSON.
    fn encode(map: &BTreeMap<String, String>, key: Option<&SealKey>) -> Result<Vec<u8>, std::io::Error> {
        let plain = serde_json::to_vec_pretty(map).expect("a map of strings serializes");
        let Some(key) = key else { return Ok(plain) };
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(std::io::Error::other)?;
        let mut data = plain;
        key.aead()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut data)
            .map_err(|_| std::io::Error::other("sealing failed"))?;
        let sealed =
            Sealed { sealed: CIPHER.into(), key_id: key.id.clone(), nonce: B64.encode(nonce), data: B64.encode(data) };
        Ok(serde_json::to_vec_pretty(&sealed).expect("strings serialize"))
    }

    /// Apply `change` to the stored map and write it back, under the lock.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<T, SecretsError>,
    ) -> Result<T, SecretsError> {
        self.update_sealing_with(self.key.as_ref(), change)
    }

    fn update_sealing_with<T>(
        &self,
        key: Option<&SealKey>,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<T, SecretsError>,
    ) -> Result<T, SecretsError> {
        let open = |path: PathBuf, truncate: bool| {
            let file =
                std::fs::OpenOptions::new().create(true).write(true).truncate(truncate).mode(0o600).open(path)?;
            owned_like_its_dir(&file, &self.path)?;
            Ok::<_, std::io::Error>(file)
        };
        let lock = open(self.path.with_extension("json.lock"), false).map_err(|e| self.io(e))?;
        // Released when `lock` is closed at the end of this function.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            return Err(self.io(std::io::Error::last_os_error()));
        }
        let mut map = self.load()?;
        let out = change(&mut map)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = open(tmp.clone(), true).map_err(|e| self.io(e))?;
        Self::encode(&map, key)
            .and_then(|bytes| file.write_all(&bytes))
            .and_then(|_| file.sync_all())
            .map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        Ok(out)
    }

    /// Seal a plain store with this process's key (nothing to do without
    /// one, or when it is sealed already).
    pub fn seal(&self) -> Result<(), SecretsError> {
        if self.key.is_some() { self.update(|_| Ok(())) } else { Ok(()) }
    }

    /// Seal the store with `new` instead of this process's key.
    pub fn reseal(&self, new: &SealKey) -> Result<(), SecretsError> {
        self.update_sealing_with(Some(new), |_| Ok(()))
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

/// Root writing a store in someone else's state dir (`sudo wasiclaw
/// service install --encrypt-secrets`, `secrets rotate`) leaves the files
/// owned by that someone, or their daemon could no longer read them.
fn owned_like_its_dir(file: &std::fs::File, store: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let dir = std::fs::metadata(store.parent().unwrap_or(Path::new(".")))?;
    std::os::unix::fs::fchown(file, Some(dir.uid()), Some(dir.gid()))
}
