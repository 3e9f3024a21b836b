//! Memory benchmark: `memory_search` latency (p50/p99) with 10k and 100k
//! memories, and the redb file size per 10k memories. Run with
//! `just bench` (or `cargo bench --bench memory`); prints figures only.

use std::time::Instant;
use wasiclaw::memory::{Memories, Memory};
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
        "{:>9} {:>10} {:>10} {:>10} {:>14} {:>16}",
        "memories", "p50 ms", "p99 ms", "max ms", "file MiB/10k", "compacted/10k"
    );
    let mut total = 0;
    for target in [10_000usize, 100_000] {
        while total < target {
            let batch: Vec<(Memory, Option<Vec<f32>>)> = (0..10_000)
                .map(|_| {
                    let len = 6 + rng.next() as usize % 15;
                    let text = (0..len).map(|_| rng.word(&vocab)).collect::<Vec<_>>().join(" ");
                    (Memory { id: 0, text, tags: vec![], source: "bench".into(), created_ms: 0, pinned: false }, None)
                })
                .collect();
            store.memory_insert(batch).unwrap();
            total += 10_000;
        }
        let memories = Memories { db: &store, embedder: None };
        let mut times: Vec<f64> = (0..500)
            .map(|_| {
                let query = format!("{} {} {}", rng.word(&vocab), rng.word(&vocab), rng.word(&vocab));
                let start = Instant::now();
                let hits = runtime.block_on(memories.search(&query, 5)).unwrap();
                std::hint::black_box(hits);
                start.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let per_10k = |bytes: u64| bytes as f64 / (1 << 20) as f64 / (total as f64 / 10_000.0);
        let size = std::fs::metadata(&path).unwrap().len();
        store.compact().unwrap();
        let compacted = std::fs::metadata(&path).unwrap().len();
        println!(
            "{:>9} {:>10.2} {:>10.2} {:>10.2} {:>14.2} {:>16.2}",
            total,
            times[times.len() / 2],
            times[times.len() * 99 / 100],
            times[times.len() - 1],
            per_10k(size),
            per_10k(compacted)
        );
    }
}
