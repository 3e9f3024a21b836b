//! Long-term memory: recall quality on a labelled set, hybrid search with
//! embeddings, export/import, the agent's use of it, and skills' access
//! only through grants.

use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Env, call, stderr};
use std::sync::Arc;
use wasiclaw::agent::Agent;
use wasiclaw::grants::{GrantChange, GrantSet};

const MEMORIES: &[&str] = &[
    "Ada's birthday is on March 3rd",
    "The dentist appointment is on Tuesday at 9:30",
    "Wi-Fi password for the cabin is on the fridge magnet",
    "Ben is allergic to peanuts",
    "The car needs new winter tyres before November",
    "Our landlord is called Mrs. Okafor, phone in the contacts app",
    "The passport expires in 2027",
    "Favourite pizza place is Luigi's on Elm Street",
    "The cat's vet is Dr. Rossi; vaccinations are due in spring",
    "Gym membership renews automatically every January",
    "Grandma prefers phone calls on Sunday afternoons",
    "The spare house key is with the neighbour at number 12",
    "Tax documents are in the blue folder in the study",
    "Ada likes tulips, not roses",
    "The boiler was serviced in October; next service in a year",
    "Train to Leeds leaves at 07:42 from platform 4",
    "Ben's shoe size is 44",
    "Book club meets on the first Thursday of the month",
    "The router admin page is at 192.168.1.1",
    "Remember to water the tomatoes every two days in summer",
];

/// (query, the memory that must be in the top 3)
const LABELLED: &[(&str, usize)] = &[
    ("when is Ada's birthday", 0),
    ("dentist tuesday", 1),
    ("what is the cabin wifi password", 2),
    ("peanut allergy", 3),
    ("winter tyres for the car", 4),
    ("landlord phone number", 5),
    ("when does my passport expire", 6),
    ("pizza restaurant", 7),
    ("vet vaccinations for the cat", 8),
    ("flowers for Ada", 13),
    ("boiler service", 14),
    ("train to Leeds", 15),
    ("book club", 17),
    ("spare key", 11),
    ("where are the tax documents", 12),
];

#[tokio::test(flavor = "multi_thread")]
async fn recall_finds_the_right_memory_in_the_top_three() {
    let env = Env::new();
    let rt = env.runtime().await;
    for text in MEMORIES {
        rt.memories().save(text, vec![], "test", false).await.unwrap();
    }
    let mut misses = Vec::new();
    for (query, want) in LABELLED {
        let hits = rt.memories().search(query, 3).await.unwrap();
        if !hits.iter().any(|h| h.memory.text == MEMORIES[*want]) {
            misses.push(format!("{query:?} -> {:?}", hits.iter().map(|h| &h.memory.text).collect::<Vec<_>>()));
        }
    }
    assert!(misses.is_empty(), "missed:\n{}", misses.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_find_meaning_that_keywords_miss() {
    let llm = FakeLlm::start(vec![]).await;
    let env = Env::new();
    env.config(&format!("[memory.embeddings]\nbase_url = \"{}/v1\"\nmodel = \"fake-embed\"", llm.base));
    let rt = env.runtime().await;
    for text in ["my cat is called Tom", "the oven timer is broken", "buy milk"] {
        rt.memories().save(text, vec![], "test", false).await.unwrap();
    }
    assert!(rt.db.memory_bm25("feline", 3).unwrap().is_empty(), "no keyword overlap");
    let hits = rt.memories().search("feline", 3).await.unwrap();
    assert_eq!(hits[0].memory.text, "my cat is called Tom");
}

#[test]
fn export_and_import_round_trip_exactly() {
    let env = Env::new();
    env.ok(&["memory", "add", "Ada likes tulips", "--tag", "people", "--tag", "flowers"]);
    env.ok(&["memory", "add", "Always answer in English", "--pin"]);
    env.ok(&["memory", "add", "temporary"]);
    env.ok(&["memory", "forget", "3"]);
    let forget = env.cli(&["memory", "forget", "3"]);
    assert!(!forget.status.success() && stderr(&forget).contains("no memory with id 3"));
    env.ok(&["memory", "pin", "1"]);
    env.ok(&["memory", "unpin", "2"]);
    env.ok(&["memory", "pin", "2"]);
    assert!(!env.cli(&["memory", "pin", "9"]).status.success());
    let exported = env.ok(&["memory", "export"]);
    assert_eq!(exported.lines().count(), 2);
    assert!(exported.lines().all(|l| l.contains("\"pinned\":true")), "{exported}");

    let other = Env::new();
    let file = other.path().join("mem.jsonl");
    std::fs::write(&file, &exported).unwrap();
    assert!(other.ok(&["memory", "import", file.to_str().unwrap()]).contains("imported 2, skipped 0"));
    assert_eq!(other.ok(&["memory", "export"]), exported, "export → import → export is the identity");
    assert!(other.ok(&["memory", "import", file.to_str().unwrap()]).contains("imported 0, skipped 2"));
    let found = other.ok(&["memory", "search", "tulips"]);
    assert!(found.contains("Ada likes tulips") && found.contains("#people #flowers"), "{found}");
    // New ids continue after the imported ones.
    assert!(other.ok(&["memory", "add", "next"]).contains("remembered as 3"));
    let bad = other.cli_stdin(&["memory", "import", "-"], "{not json}\n");
    assert!(!bad.status.success() && stderr(&bad).contains("line 1"), "{}", stderr(&bad));
}

#[tokio::test(flavor = "multi_thread")]
async fn skills_reach_memory_only_through_grants() {
    let env = Env::new();
    env.install("hostile");
    let rt = env.runtime().await;
    rt.memories().save("the owner's bank PIN hint is a birthday", vec![], "cli", false).await.unwrap();
    let recall = call(&rt, "hostile.recall", r#"{"query":"bank pin"}"#).await;
    assert!(recall.denials[0].contains("--memory-read"), "{recall:?}");
    let remember = call(&rt, "hostile.remember", r#"{"text":"planted"}"#).await;
    assert_eq!(remember.error_kind, Some(wasiclaw::runtime::Failure::Denied));
    let grant = |rights: GrantSet| {
        rt.change_grant("hostile", &GrantChange { rights, all: false, carry_over: None }, false).unwrap()
    };
    grant(GrantSet { rights: wasiclaw::grants::Rights::MEMORY_WRITE, ..Default::default() });
    assert!(call(&rt, "hostile.remember", r#"{"text":"Ada likes jazz"}"#).await.ok);
    assert_eq!(
        call(&rt, "hostile.recall", r#"{"query":"jazz"}"#).await.error_kind,
        Some(wasiclaw::runtime::Failure::Denied)
    );
    grant(GrantSet { rights: wasiclaw::grants::Rights::MEMORY_READ, ..Default::default() });
    let found = call(&rt, "hostile.recall", r#"{"query":"jazz"}"#).await;
    assert!(found.ok && found.output.contains("Ada likes jazz"), "{found:?}");
    let saved = rt.db.memory_all().unwrap().into_iter().find(|m| m.text == "Ada likes jazz").unwrap();
    assert_eq!(saved.source, "skill:hostile");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_recalls_pinned_and_relevant_memories_and_saves_new_ones() {
    let llm = FakeLlm::start(vec![
        Reply::Tools(vec![("memory_save", r#"{"text":"Ada likes tulips","tags":["people"]}"#)]),
        Reply::Text("Noted: tulips for Ada."),
    ])
    .await;
    let env = Env::new();
    env.config(&format!("[[providers]]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"m\"", llm.base));
    let rt = Arc::new(env.runtime().await);
    for text in MEMORIES {
        rt.memories().save(text, vec![], "cli", false).await.unwrap();
    }
    rt.memories().save("Always answer in English", vec![], "cli", true).await.unwrap();
    let agent = Agent::new(rt.clone(), None).await;
    let reply = agent.turn("t:1", "what flowers should I get for Ada's birthday?", &|_| {}).await.unwrap();
    assert_eq!(reply, "Noted: tulips for Ada.");
    let system = llm.requests()[0]["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(system.contains("## From your long-term memory"), "{system}");
    assert!(system.contains("Always answer in English"), "pinned memories are always there");
    assert!(system.contains("Ada's birthday is on March 3rd"), "{system}");
    assert!(!system.contains("router admin page"), "only relevant memories are recalled");
    let tools = llm.requests()[0]["tools"].to_string();
    for t in ["memory_save", "memory_search", "memory_forget"] {
        assert!(tools.contains(t), "{t} missing");
    }
    let saved = rt.db.memory_all().unwrap().into_iter().find(|m| m.text == "Ada likes tulips").unwrap();
    assert_eq!((saved.source.as_str(), saved.tags.clone()), ("agent", vec!["people".to_string()]));
}

#[test]
fn a_backup_taken_while_the_daemon_runs_restores_every_memory() {
    let env = Env::new();
    let daemon = env.daemon();
    for text in ["the boiler code is 4471", "Ada's birthday is in May"] {
        env.ok(&["memory", "add", text]);
    }
    let backup = env.path().join("backup.redb");
    let said = env.ok(&["backup", backup.to_str().unwrap()]);
    assert!(said.contains("checked"), "{said}");
    let live = env.path().join("wasiclaw.redb");
    let refused = env.cli(&["backup", live.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "the live database is not a backup target");
    drop(daemon);
    // Restore into a fresh state dir, as the help says.
    let restored = Env::new();
    std::fs::copy(&backup, restored.path().join("wasiclaw.redb")).unwrap();
    let list = restored.ok(&["memory", "list"]);
    assert!(list.contains("boiler code is 4471") && list.contains("birthday is in May"), "{list}");
}
