//! Memory benchmark: `memory_search` latency (p50/p99) with 10k and 100k
//! memories, the redb file size per 10k memories, and recall: how often
//! the top 5 equal those of exhaustive BM25 computed here from the texts,
//! without the index. Run with `just bench` (or `cargo bench --bench
//! memory`); prints figures only.

use std::collections::HashMap;
use std::time::Instant;
use wasiclaw::memory::{Memories, Memory, terms};
use wasiclaw::store::Store;

/// A small deterministic generator so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// Zipf-like: low indices far more often, like words in real notes.
    fn word(&mut self, vocab: &[String]) -> String {
        let r = (self.next() % 10_000) as f64 / 10_000.0;
        vocab[((r * r * r) * vocab.len() as f64) as usize].clone()
    }
}

fn main() {
    let mut rng = Rng(42);
    let syllables = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "dor", "pi", "nu", "ex", "qua", "zen", "bo", "li"];
    let vocab: Vec<String> = (0..6000)
        .map(|i| {
            let n = 2 + i % 3;
            (0..n).map(|k| syllables[(i * 7 + k * 13 + i / 15) % syllables.len()]).collect::<String>() + &i.to_string()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.redb");
    let mut store = Store::open(&path, &wasiclaw::runtime::TABLES).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    println!("memory_search benchmark (BM25 keywords, no embeddings), 500 queries per size");
    println!(
        "{:>9} {:>10} {:>10} {:>10} {:>14} {:>16} {:>12}",
        "memories", "p50 ms", "p99 ms", "max ms", "file MiB/10k", "compacted/10k", "top-5 same"
    );
    let mut total = 0;
    let mut exhaustive = Exhaustive::default();
    for target in [10_000usize, 100_000] {
        while total < target {
            let batch: Vec<(Memory, Option<Vec<f32>>)> = (0..10_000)
                .map(|_| {
                    let len = 6 + rng.next() as usize % 15;
                    let text = (0..len).map(|_| rng.word(&vocab)).collect::<Vec<_>>().join(" ");
                    exhaustive.add(&text);
                    (Memory { id: 0, text, tags: vec![], source: "bench".into(), created_ms: 0, pinned: false }, None)
                })
                .collect();
            store.memory_insert(batch).unwrap();
            total += 10_000;
        }
        let memories = Memories { db: &store, embedder: None };
        let mut same = 0;
        let mut times: Vec<f64> = (0..500)
            .map(|_| {
                let query = format!("{} {} {}", rng.word(&vocab), rng.word(&vocab), rng.word(&vocab));
                let start = Instant::now();
                let hits = runtime.block_on(memories.search(&query, 5)).unwrap();
                let elapsed = start.elapsed().as_secs_f64() * 1000.0;
                let ids: Vec<u64> = hits.iter().map(|h| h.memory.id).collect();
                same += usize::from(ids == exhaustive.top(&query, 5));
                elapsed
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let per_10k = |bytes: u64| bytes as f64 / (1 << 20) as f64 / (total as f64 / 10_000.0);
        let size = std::fs::metadata(&path).unwrap().len();
        store.compact().unwrap();
        let compacted = std::fs::metadata(&path).unwrap().len();
        println!(
            "{:>9} {:>10.2} {:>10.2} {:>10.2} {:>14.2} {:>16.2} {:>11.1}%",
            total,
            times[times.len() / 2],
            times[times.len() * 99 / 100],
            times[times.len() - 1],
            per_10k(size),
            per_10k(compacted),
            same as f64 / 5.0
        );
    }
}

/// BM25 over every memory, from the texts (ids are 1, 2, ... in order).
#[derive(Default)]
struct Exhaustive {
    postings: HashMap<String, Vec<(u64, u32)>>,
    lengths: Vec<u32>,
}

impl Exhaustive {
    fn add(&mut self, text: &str) {
        let id = self.lengths.len() as u64 + 1;
        let words = terms(text);
        self.lengths.push(words.len() as u32);
        let mut tf: HashMap<String, u32> = HashMap::new();
        for w in words {
            *tf.entry(w).or_default() += 1;
        }
        for (w, n) in tf {
            self.postings.entry(w).or_default().push((id, n));
        }
    }

    fn top(&self, query: &str, k: usize) -> Vec<u64> {
        let docs = self.lengths.len() as f64;
        let avgdl = (self.lengths.iter().map(|&l| l as f64).sum::<f64>() / docs).max(1.0);
        let mut scores: HashMap<u64, f64> = HashMap::new();
        let mut query = terms(query);
        query.sort();
        query.dedup();
        for term in query {
            let Some(list) = self.postings.get(&term) else { continue };
            let df = list.len() as f64;
            let idf = (1.0 + (docs - df + 0.5) / (df + 0.5)).ln();
            for &(id, tf) in list {
                let (tf, dl) = (tf as f64, self.lengths[id as usize - 1] as f64);
                *scores.entry(id).or_default() +=
                    idf * tf * (1.2 + 1.0) / (tf + 1.2 * (1.0 - 0.75 + 0.75 * dl / avgdl));
            }
        }
        let mut ranked: Vec<(u64, f64)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.into_iter().take(k).map(|(id, _)| id).collect()
    }
}
