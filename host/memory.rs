//! Long-term memory: memories in redb with a BM25 keyword index kept in
//! the same transaction as every write, optional embeddings, and hybrid
//! search by reciprocal rank fusion.
//!
//! Invariants: a memory, its postings, its length and its embedding are
//! written and removed together, so the index never disagrees with the
//! memories; ids are never reused; export/import round-trips exactly.

use crate::store::{Store, StoreError, now_ms};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

const MEMORIES: TableDefinition<u64, &[u8]> = TableDefinition::new("memories");
/// (term, memory id) → term frequency.
const POSTINGS: TableDefinition<(&str, u64), u32> = TableDefinition::new("memory_postings");
/// memory id → document length in terms.
const LENGTHS: TableDefinition<u64, u32> = TableDefinition::new("memory_lengths");
/// memory id → embedding as little-endian f32s.
const VECTORS: TableDefinition<u64, &[u8]> = TableDefinition::new("memory_vectors");
/// Ids of pinned memories, so recall never scans every memory.
const PINNED: TableDefinition<u64, ()> = TableDefinition::new("memory_pinned");
/// "next_id", "docs", "total_len".
const META: TableDefinition<&str, u64> = TableDefinition::new("memory_meta");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(MEMORIES)?;
    txn.open_table(POSTINGS)?;
    txn.open_table(LENGTHS)?;
    txn.open_table(VECTORS)?;
    txn.open_table(PINNED)?;
    txn.open_table(META)?;
    Ok(())
}

/// One memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Its id.
    pub id: u64,
    /// The text.
    pub text: String,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Who saved it: `cli`, `agent`, `skill:NAME`, `import`.
    pub source: String,
    /// When it was saved (Unix ms).
    pub created_ms: i64,
    /// Always in the model's context.
    #[serde(default)]
    pub pinned: bool,
}

/// A search hit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hit {
    /// The memory.
    pub memory: Memory,
    /// How well it matches (higher is better).
    pub score: f64,
}

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "do", "for", "from", "has", "have", "i", "in", "is", "it",
    "its", "me", "my", "of", "on", "or", "our", "so", "that", "the", "this", "to", "was", "we", "what", "when",
    "where", "which", "who", "will", "with", "you", "your",
];

/// Lower-case terms with stop words dropped and plural endings folded, so
/// "Dentists'" and "dentist" meet.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        // Splitting on the apostrophe leaves a lone "s" of possessives: drop
        // one-letter words (digits still count).
        .filter(|w| !w.is_empty() && (w.len() > 1 || w.chars().all(|c| c.is_ascii_digit())))
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| {
            if w.len() > 4 && w.ends_with("ies") {
                format!("{}y", &w[..w.len() - 3])
            } else if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
                w[..w.len() - 1].to_string()
            } else {
                w
            }
        })
        .collect()
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += (*x as f64) * (*y as f64);
        na += (*x as f64).powi(2);
        nb += (*y as f64).powi(2);
    }
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na.sqrt() * nb.sqrt()) }
}

/// Reciprocal rank fusion of ranked id lists (k = 60, as in the paper).
pub fn fuse(rankings: &[Vec<u64>]) -> Vec<(u64, f64)> {
    let mut scores: HashMap<u64, f64> = HashMap::new();
    for ranking in rankings {
        for (rank, id) in ranking.iter().enumerate() {
            *scores.entry(*id).or_default() += 1.0 / (60.0 + rank as f64 + 1.0);
        }
    }
    let mut out: Vec<(u64, f64)> = scores.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

impl Store {
    /// Insert memories (ids 0 get fresh ones) with their index entries, in
    /// one transaction. Existing ids are skipped; returns what was stored.
    pub fn memory_insert(&self, items: Vec<(Memory, Option<Vec<f32>>)>) -> Result<Vec<Memory>, StoreError> {
        let txn = self.db.begin_write()?;
        let mut stored = Vec::new();
        {
            let mut memories = txn.open_table(MEMORIES)?;
            let mut postings = txn.open_table(POSTINGS)?;
            let mut lengths = txn.open_table(LENGTHS)?;
            let mut vectors = txn.open_table(VECTORS)?;
            let mut pinned = txn.open_table(PINNED)?;
            let mut meta = txn.open_table(META)?;
            let get = |meta: &redb::Table<&str, u64>, k: &str| -> Result<u64, StoreError> {
                Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0))
            };
            let (mut next, mut docs, mut total) =
                (get(&meta, "next_id")?.max(1), get(&meta, "docs")?, get(&meta, "total_len")?);
            for (mut m, vector) in items {
                if m.id == 0 {
                    m.id = next;
                } else if memories.get(m.id)?.is_some() {
                    continue;
                }
                next = next.max(m.id + 1);
                let words = terms(&m.text);
                let mut tf: HashMap<&str, u32> = HashMap::new();
                for w in &words {
                    *tf.entry(w).or_default() += 1;
                }
                for (term, n) in tf {
                    postings.insert((term, m.id), n)?;
                }
                lengths.insert(m.id, words.len() as u32)?;
                if let Some(v) = vector {
                    vectors.insert(m.id, to_bytes(&v).as_slice())?;
                }
                if m.pinned {
                    pinned.insert(m.id, ())?;
                }
                memories.insert(m.id, serde_json::to_vec(&m)?.as_slice())?;
                docs += 1;
                total += words.len() as u64;
                stored.push(m);
            }
            meta.insert("next_id", next)?;
            meta.insert("docs", docs)?;
            meta.insert("total_len", total)?;
        }
        txn.commit()?;
        Ok(stored)
    }

    /// Store a memory (and its postings) in one transaction.
    pub fn memory_add(
        &self,
        text: &str,
        tags: Vec<String>,
        source: &str,
        pinned: bool,
        vector: Option<Vec<f32>>,
    ) -> Result<Memory, StoreError> {
        let m = Memory { id: 0, text: text.into(), tags, source: source.into(), created_ms: now_ms(), pinned };
        Ok(self.memory_insert(vec![(m, vector)])?.remove(0))
    }

    /// Remove a memory and its index entries; false if there was none.
    pub fn memory_forget(&self, id: u64) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let found = {
            let mut memories = txn.open_table(MEMORIES)?;
            let removed = memories.remove(id)?.map(|v| v.value().to_vec());
            match removed {
                None => false,
                Some(bytes) => {
                    let m: Memory = serde_json::from_slice(&bytes)?;
                    let mut postings = txn.open_table(POSTINGS)?;
                    for term in terms(&m.text).into_iter().collect::<BTreeSet<_>>() {
                        postings.remove((term.as_str(), id))?;
                    }
                    let len = txn.open_table(LENGTHS)?.remove(id)?.map(|v| v.value()).unwrap_or(0);
                    txn.open_table(VECTORS)?.remove(id)?;
                    txn.open_table(PINNED)?.remove(id)?;
                    let mut meta = txn.open_table(META)?;
                    let docs = meta.get("docs")?.map(|v| v.value()).unwrap_or(1);
                    let total = meta.get("total_len")?.map(|v| v.value()).unwrap_or(0);
                    meta.insert("docs", docs.saturating_sub(1))?;
                    meta.insert("total_len", total.saturating_sub(len as u64))?;
                    true
                }
            }
        };
        txn.commit()?;
        Ok(found)
    }

    /// Set or clear the pinned flag; false if there is no such memory.
    pub fn memory_pin(&self, id: u64, pin: bool) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let found = {
            let mut memories = txn.open_table(MEMORIES)?;
            let current = memories.get(id)?.map(|v| v.value().to_vec());
            match current {
                None => false,
                Some(bytes) => {
                    let mut m: Memory = serde_json::from_slice(&bytes)?;
                    m.pinned = pin;
                    memories.insert(id, serde_json::to_vec(&m)?.as_slice())?;
                    let mut pinned = txn.open_table(PINNED)?;
                    if pin {
                        pinned.insert(id, ())?;
                    } else {
                        pinned.remove(id)?;
                    }
                    true
                }
            }
        };
        txn.commit()?;
        Ok(found)
    }

    /// The pinned memories, without reading any other.
    pub fn memory_pinned(&self) -> Result<Vec<Memory>, StoreError> {
        let ids: Vec<u64> = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(PINNED)?;
            table.iter()?.map(|e| e.map(|(k, _)| k.value())).collect::<Result<_, _>>()?
        };
        self.memory_get(&ids)
    }

    /// All memories in id order (oldest first).
    pub fn memory_all(&self) -> Result<Vec<Memory>, StoreError> {
        self.all_records(MEMORIES)
    }

    /// The memories with these ids.
    pub fn memory_get(&self, ids: &[u64]) -> Result<Vec<Memory>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MEMORIES)?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(v) = table.get(*id)? {
                out.push(serde_json::from_slice(v.value())?);
            }
        }
        Ok(out)
    }

    /// BM25 (k1 = 1.2, b = 0.75) over the keyword index: ids, best first.
    pub fn memory_bm25(&self, query: &str, limit: usize) -> Result<Vec<(u64, f64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let postings = txn.open_table(POSTINGS)?;
        let lengths = txn.open_table(LENGTHS)?;
        let meta = txn.open_table(META)?;
        let docs = meta.get("docs")?.map(|v| v.value()).unwrap_or(0) as f64;
        if docs == 0.0 {
            return Ok(vec![]);
        }
        let avgdl = (meta.get("total_len")?.map(|v| v.value()).unwrap_or(0) as f64 / docs).max(1.0);
        let (k1, b) = (1.2, 0.75);
        let mut scores: HashMap<u64, f64> = HashMap::new();
        for term in terms(query).into_iter().collect::<BTreeSet<_>>() {
            let hits: Vec<(u64, u32)> = postings
                .range((term.as_str(), 0)..=(term.as_str(), u64::MAX))?
                .map(|e| e.map(|(k, v)| (k.value().1, v.value())))
                .collect::<Result<_, _>>()?;
            let df = hits.len() as f64;
            let idf = (1.0 + (docs - df + 0.5) / (df + 0.5)).ln();
            for (id, tf) in hits {
                let dl = lengths.get(id)?.map(|v| v.value()).unwrap_or(0) as f64;
                let tf = tf as f64;
                *scores.entry(id).or_default() += idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * dl / avgdl));
            }
        }
        let mut ranked: Vec<(u64, f64)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(limit);
        Ok(ranked)
    }

    /// Cosine similarity against every stored embedding: ids, best first.
    pub fn memory_nearest(&self, query: &[f32], limit: usize) -> Result<Vec<(u64, f64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(VECTORS)?;
        let mut ranked = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            ranked.push((k.value(), cosine(query, &from_bytes(v.value()))));
        }
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(limit);
        Ok(ranked)
    }
}

/// An OpenAI-compatible `/embeddings` endpoint (OpenAI, Ollama, llama.cpp, vLLM).
pub struct Embedder {
    client: reqwest::Client,
    config: crate::config::EmbeddingsConfig,
    secrets: crate::secrets::Secrets,
}

impl Embedder {
    /// A client of the embeddings endpoint in `config`.
    pub fn new(config: crate::config::EmbeddingsConfig, secrets: crate::secrets::Secrets) -> Self {
        let client =
            reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().expect("TLS backend");
        Embedder { client, config, secrets }
    }

    /// The embedding of `text`.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, String> {
        let url = format!("{}/embeddings", self.config.base_url.trim_end_matches('/'));
        let mut req = self.client.post(url).json(&serde_json::json!({"model": self.config.model, "input": text}));
        if let Some(name) = &self.config.api_key_secret {
            let key = self.secrets.get(name).map_err(|e| e.to_string())?.ok_or(format!("secret {name} is not set"))?;
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| format!("embeddings: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("embeddings: HTTP {}", resp.status()));
        }
        let v: serde_json::Value = resp.json().await.map_err(|e| format!("embeddings: {e}"))?;
        v["data"][0]["embedding"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect())
            .filter(|v: &Vec<f32>| !v.is_empty())
            .ok_or_else(|| "embeddings: no `data[0].embedding` in the reply".to_string())
    }
}

/// Memory with its optional embedder: what the CLI, agent and skills use.
pub struct Memories<'a> {
    /// The database.
    pub db: &'a Store,
    /// Embeddings, if configured.
    pub embedder: Option<&'a Embedder>,
}

impl Memories<'_> {
    async fn vector(&self, text: &str) -> Option<Vec<f32>> {
        let e = self.embedder?;
        match e.embed(text).await {
            Ok(v) => Some(v),
            Err(why) => {
                // Keyword search still works; the memory is not lost.
                tracing::warn!("{why}; using keywords only");
                None
            }
        }
    }

    /// Save a memory (with its embedding, if configured).
    pub async fn save(&self, text: &str, tags: Vec<String>, source: &str, pinned: bool) -> Result<Memory, StoreError> {
        let vector = self.vector(text).await;
        self.db.memory_add(text, tags, source, pinned, vector)
    }

    /// Hybrid search: BM25, fused with embedding similarity when available.
    pub async fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, StoreError> {
        let depth = (limit * 4).max(20);
        let keyword = self.db.memory_bm25(query, depth)?;
        let fused = match self.vector(query).await {
            Some(q) => {
                let near = self.db.memory_nearest(&q, depth)?;
                fuse(&[keyword.iter().map(|h| h.0).collect(), near.iter().map(|h| h.0).collect()])
            }
            None => keyword,
        };
        let mut hits = Vec::new();
        for (id, score) in fused.into_iter().take(limit) {
            // A memory forgotten since the index was read is simply skipped.
            if let Some(memory) = self.db.memory_get(&[id])?.pop() {
                hits.push(Hit { memory, score });
            }
        }
        Ok(hits)
    }

    /// JSON Lines, one memory per line, oldest first.
    pub fn export(&self) -> Result<String, StoreError> {
        let mut out = String::new();
        for m in self.db.memory_all()? {
            out.push_str(&serde_json::to_string(&m)?);
            out.push('\n');
        }
        Ok(out)
    }

    /// Import JSON Lines as exported; ids already present are skipped.
    /// Returns (imported, skipped), or the first bad line.
    pub async fn import(&self, jsonl: &str) -> Result<(usize, usize), String> {
        let mut items = Vec::new();
        for (n, line) in jsonl.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let m: Memory = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
            let vector = self.vector(&m.text).await;
            items.push((m, vector));
        }
        let total = items.len();
        let stored = self.db.memory_insert(items).map_err(|e| e.to_string())?;
        Ok((stored.len(), total - stored.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_fold_plurals_and_drop_stopwords() {
        assert_eq!(terms("The dentist's Appointments, and batteries!"), vec!["dentist", "appointment", "battery"]);
        assert_eq!(terms("glass"), vec!["glass"]);
    }

    #[test]
    fn pinned_set_follows_pin_unpin_and_forget() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(&dir.path().join("db"), &[create_tables]).unwrap();
        let a = db.memory_add("always english", vec![], "t", true, None).unwrap();
        let b = db.memory_add("plain", vec![], "t", false, None).unwrap();
        let ids = |db: &Store| db.memory_pinned().unwrap().iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(&db), [a.id]);
        assert!(db.memory_pin(b.id, true).unwrap());
        assert!(db.memory_pin(a.id, false).unwrap());
        assert_eq!(ids(&db), [b.id]);
        assert!(db.memory_pinned().unwrap()[0].pinned);
        assert!(db.memory_forget(b.id).unwrap());
        assert!(ids(&db).is_empty());
        assert!(!db.memory_pin(99, true).unwrap());
    }

    #[test]
    fn rrf_rewards_agreement() {
        let fused = fuse(&[vec![1, 2, 3], vec![3, 1, 4]]);
        assert_eq!(fused[0].0, 1);
        assert_eq!(fused[1].0, 3);
    }
}
