//! The wasiclaw imports a component sees: kv, log, config, notify, crypto.
//!
//! Each capability check happens here, at the boundary, against the call's
//! effective rights; a missing grant is an `error::denied` value whose text
//! says how to grant it, and every use is audited.

use crate::budget::Spend;
use crate::contract::bindings::wasiclaw::plugin::{config, crypto, kv, log, memory, notify, types};
use crate::engine::SkillState;
use crate::grants::{self, Rights};
use crate::memory::{MEMORY_QUERY_MAX, Memories};
use hmac::{Hmac, Mac};
use types::Error;

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 1 << 20;
const MAX_KEYS_LISTED: usize = 10_000;
const MAX_LOG: usize = 4096;
const MAX_NOTIFY: usize = 16 * 1024;

type HostResult<T> = wasmtime::Result<Result<T, Error>>;

/// Run database work on the blocking pool: the call's wall-clock timeout
/// can fire meanwhile, and the async workers keep serving others.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => store_result(result),
        Err(e) => Err(failed(e)),
    }
}

/// A database result as the guest sees it: a quota is a denial.
fn store_result<T>(result: Result<T, crate::store::StoreError>) -> Result<T, Error> {
    result.map_err(|e| match e {
        crate::store::StoreError::Quota(why) => Error::Denied(why),
        e => failed(e),
    })
}

impl SkillState {
    /// Check one right, auditing the use either way.
    fn check(&self, right: Rights, capability: &str, target: &str) -> Result<(), Error> {
        let host = &self.host;
        if host.effective.rights.contains(right) {
            host.audit(capability, target, true, "");
            return Ok(());
        }
        let flag = right.names().next().unwrap_or_default();
        let reason = format!("{capability} not granted; {}", grants::grant_advice(&host.skill, &format!("--{flag}")));
        host.audit(capability, target, false, &reason);
        Err(Error::Denied(reason))
    }

    /// Take one use of `spend` (`what`, in the refusal's words) from the
    /// component's budget, or deny it and audit the denial.
    fn spend(&self, spend: Spend, what: &str, capability: &str, target: &str) -> Result<(), Error> {
        if self.host.budget.take(spend, 1) {
            return Ok(());
        }
        let why = spend.refusal(&self.host.limits, what);
        self.host.audit(capability, target, false, &why);
        Err(Error::Denied(why))
    }

    fn kv_check(&self, op: &str, key: &str) -> Result<(), Error> {
        if key.len() > MAX_KEY {
            return Err(Error::InvalidInput(format!("key is longer than {MAX_KEY} bytes")));
        }
        self.check(Rights::KV, "kv", &format!("{op} {key}"))
    }
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::Failed(e.to_string())
}

impl types::Host for SkillState {}

/// kv uses run on the calling thread, not the blocking pool: a read never
/// waits for a writer (redb reads a snapshot) and a write is only staged in
/// memory until the call's end commit (`context::HostCtx::kv_put`); a hand-off
/// to the pool and back cost more than the use itself.
impl kv::Host for SkillState {
    async fn get(&mut self, key: String) -> HostResult<Option<Vec<u8>>> {
        if let Err(e) = self.kv_check("get", &key) {
            return Ok(Err(e));
        }
        Ok(store_result(self.host.kv_get(&key)))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> HostResult<()> {
        if value.len() > MAX_VALUE {
            return Ok(Err(Error::InvalidInput(format!("value is larger than {MAX_VALUE} bytes"))));
        }
        if let Err(e) = self.kv_check("set", &key) {
            return Ok(Err(e));
        }
        let result = store_result(self.host.kv_put(&key, Some(value)));
        if let Err(Error::Denied(why)) = &result {
            self.host.audit("kv", "set", false, why);
        }
        Ok(result)
    }

    async fn delete(&mut self, key: String) -> HostResult<()> {
        if let Err(e) = self.kv_check("delete", &key) {
            return Ok(Err(e));
        }
        Ok(store_result(self.host.kv_put(&key, None)))
    }

    async fn list_keys(&mut self, prefix: String) -> HostResult<Vec<String>> {
        if let Err(e) = self.kv_check("list", &prefix) {
            return Ok(Err(e));
        }
        Ok(store_result(self.host.kv_keys(&prefix, MAX_KEYS_LISTED)))
    }
}

impl log::Host for SkillState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let skill = &self.host.skill;
        let message = crate::text::truncate(&message, MAX_LOG);
        if !self.host.take_log(message.len()) {
            return Ok(());
        }
        let message = crate::text::one_line(&message);
        match level {
            log::Level::Trace => tracing::trace!(skill, "{message}"),
            log::Level::Debug => tracing::debug!(skill, "{message}"),
            log::Level::Info => tracing::info!(skill, "{message}"),
            log::Level::Warn => tracing::warn!(skill, "{message}"),
            log::Level::Error => tracing::error!(skill, "{message}"),
        }
        Ok(())
    }
}

impl config::Host for SkillState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.host.settings.as_ref().and_then(|t| t.get(&key)).map(|v| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        }))
    }
}

impl notify::Host for SkillState {
    async fn send(&mut self, text: String) -> HostResult<()> {
        if text.len() > MAX_NOTIFY {
            return Ok(Err(Error::InvalidInput(format!("message is longer than {MAX_NOTIFY} bytes"))));
        }
        let preview = crate::text::truncate(&text, 80);
        if let Err(e) = self.check(Rights::NOTIFY, "notify", &preview) {
            return Ok(Err(e));
        }
        if let Err(e) = self.spend(Spend::Notify, "messages", "notify", &preview) {
            return Ok(Err(e));
        }
        let (db, skill, owner_chat) = (self.host.db.clone(), self.host.skill.clone(), self.host.owner_chat.clone());
        Ok(blocking(move || {
            db.notify(&skill, &text)?;
            let owner = crate::queue::owner_chat(owner_chat.as_deref(), &db);
            if let Some((channel, chat)) = owner.as_deref().and_then(|t| t.split_once(':')) {
                db.outbox_enqueue(channel, chat, &format!("[{skill}] {text}"))?;
            }
            Ok(())
        })
        .await)
    }
}

impl SkillState {
    /// A granted, set secret's value, auditing the use either way.
    /// Only secrets granted for `crypto` (named in the manifest's
    /// `secrets`) answer here: one granted for an HTTP rule is not thereby
    /// an HMAC key or an equality oracle.
    fn secret_for(&self, secret: &str, purpose: &str) -> Result<String, Error> {
        let host = &self.host;
        let denied = |reason: String| {
            host.audit("secret", secret, false, &reason);
            Error::Denied(reason)
        };
        if !host.effective.crypto_secrets.contains(secret) {
            if host.effective.secrets.contains(secret) {
                return Err(denied(format!(
                    "secret {secret} is granted only for the HTTP rules that name it; to use it with crypto the component must list it in `capabilities.secrets`"
                )));
            }
            let advice = grants::grant_advice(&host.skill, &format!("--secret {secret}"));
            return Err(denied(format!("secret {secret} not granted; {advice}")));
        }
        match host.secrets.get(secret) {
            Ok(Some(v)) => {
                host.audit("secret", secret, true, purpose);
                Ok(v)
            }
            Ok(None) => Err(denied(format!("secret {secret} is not set; run `wasiclaw secrets set {secret}`"))),
            Err(e) => Err(failed(e)),
        }
    }
}

/// The most data one `hmac-sha256` takes: a webhook body (the gateway takes
/// at most 1 MiB) with room for what a platform signs beside it. Hashing
/// is host CPU the guest's epoch budget sees only once per call.
const MAX_HMAC_DATA: usize = 2 << 20;

/// The longest candidate `secret-equals` hashes (a webhook's token or
/// header; comparing hashes both sides, which is host CPU).
const MAX_CANDIDATE: usize = 64 << 10;

/// A secret at least this long (32 bytes: 128 bits even as hex) is beyond
/// online guessing, so the first comparison with it in a call spends no
/// `secret_checks_per_minute`.
pub const UNGUESSABLE: usize = 32;

impl crypto::Host for SkillState {
    fn hmac_sha256(&mut self, secret: String, data: Vec<u8>) -> HostResult<Vec<u8>> {
        if data.len() > MAX_HMAC_DATA {
            return Ok(Err(Error::InvalidInput(format!(
                "hmac-sha256 takes at most {} MiB of data",
                MAX_HMAC_DATA >> 20
            ))));
        }
        Ok(self.secret_for(&secret, "hmac-sha256").map(|value| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(value.as_bytes()).expect("HMAC takes any key length");
            mac.update(&data);
            mac.finalize().into_bytes().to_vec()
        }))
    }

    fn secret_equals(&mut self, secret: String, candidate: Vec<u8>) -> HostResult<bool> {
        if candidate.len() > MAX_CANDIDATE {
            return Ok(Err(Error::InvalidInput(format!(
                "secret-equals takes a candidate of at most {} KiB",
                MAX_CANDIDATE >> 10
            ))));
        }
        let value = match self.secret_for(&secret, "secret-equals") {
            Ok(value) => value,
            Err(e) => return Ok(Err(e)),
        };
        // A long secret cannot be guessed online, so its first check in a
        // call (a webhook's one check of the token it was sent) is not
        // budgeted: a stranger's wrong tokens then cannot spend the budget
        // and lock out the platform's deliveries. More in one call are: a
        // component granted the secret would otherwise try a dictionary at
        // host speed against one the owner chose.
        self.secret_checks += 1;
        let short = value.len() < UNGUESSABLE;
        if (short || self.secret_checks > 1)
            && let Err(e) = self.spend(Spend::SecretChecks, "secret checks", "secret", &secret)
        {
            return Ok(Err(match e {
                // Say the way out where the owner will look (logs, audit, status).
                Error::Denied(why) if short => Error::Denied(format!(
                    "{why}; a webhook's check of a secret of {UNGUESSABLE} bytes or more is not limited: `wasiclaw secrets set {secret} --random`"
                )),
                e => e,
            }));
        }
        Ok(Ok(crate::secrets::constant_time_eq(&candidate, value.as_bytes())))
    }
}

impl memory::Host for SkillState {
    async fn search(&mut self, query: String, limit: u32) -> HostResult<Vec<memory::MemoryHit>> {
        if query.len() > MEMORY_QUERY_MAX {
            return Ok(Err(Error::InvalidInput(format!("a memory query is at most {MEMORY_QUERY_MAX} bytes"))));
        }
        let target = format!("search {query}");
        if let Err(e) = self.check(Rights::MEMORY_READ, "memory", &target) {
            return Ok(Err(e));
        }
        if let Err(e) = self.spend(Spend::MemorySearches, "memory searches", "memory", &target) {
            return Ok(Err(e));
        }
        let (db, embedder, handle) =
            (self.host.db.clone(), self.host.embedder.clone(), tokio::runtime::Handle::current());
        let search = move || {
            let memories = Memories { db: &db, embedder: embedder.as_deref() };
            handle.block_on(memories.search(&query, limit.min(50) as usize))
        };
        Ok(blocking(search).await.map(|hits| {
            hits.into_iter()
                .map(|h| memory::MemoryHit {
                    id: h.memory.id,
                    text: h.memory.text,
                    tags: h.memory.tags,
                    created: jiff::Timestamp::from_millisecond(h.memory.created_ms)
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    score: h.score,
                })
                .collect()
        }))
    }

    async fn save(&mut self, text: String, tags: Vec<String>) -> HostResult<u64> {
        if let Err(why) = crate::memory::check(&text, &tags) {
            return Ok(Err(Error::InvalidInput(why)));
        }
        let target = format!("save {}", crate::text::truncate(&text, 80));
        if let Err(e) = self.check(Rights::MEMORY_WRITE, "memory", &target) {
            return Ok(Err(e));
        }
        if let Err(e) = self.spend(Spend::MemorySaves, "memory saves", "memory", &target) {
            return Ok(Err(e));
        }
        let (db, embedder, handle) =
            (self.host.db.clone(), self.host.embedder.clone(), tokio::runtime::Handle::current());
        let (source, most) = (format!("skill:{}", self.host.skill), self.host.limits.memories_kept);
        let save = move || {
            let memories = Memories { db: &db, embedder: embedder.as_deref() };
            handle.block_on(memories.save_within(&text, tags, &source, most))
        };
        Ok(blocking(save).await.and_then(|saved| {
            saved.map(|m| m.id).ok_or_else(|| {
                let why = format!(
                    "this component keeps {most} memories, the most [limits] memories_kept allows; the owner frees room with `wasiclaw memory forget ID`"
                );
                self.host.audit("memory", &target, false, &why);
                Error::Denied(why)
            })
        }))
    }
}
