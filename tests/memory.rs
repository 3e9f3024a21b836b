//! Long-term memory: recall quality on a labelled set, hybrid search with
//! embeddings, export/import, the agent's use of it, and skills' access
//! only through grants.

use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Env, Recorder, call, stderr, stdout};
use std::sync::Arc;
use std::time::Duration;
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

/// An embeddings endpoint that streams without end is read up to a bound:
/// the memory is saved and found by its words.
#[tokio::test(flavor = "multi_thread")]
async fn an_embeddings_reply_that_never_ends_is_cut_off() {
    let llm = FakeLlm::start(vec![]).await;
    let env = Env::new();
    env.config(&format!("[memory.embeddings]\nbase_url = \"{}/endless/v1\"\nmodel = \"fake-embed\"", llm.base));
    let rt = env.runtime().await;
    let memories = rt.memories();
    let save = memories.save("my cat is called Tom", vec![], "test", false);
    tokio::time::timeout(Duration::from_secs(10), save).await.expect("the save never ended").unwrap();
    let hits = rt.memories().search("cat", 3).await.unwrap();
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
    // To a file only the owner reads, through no link someone left there.
    let victim = env.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, &file).unwrap();
    env.ok(&["memory", "export", file.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious", "the export wrote through a link");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), exported);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let imported = other.ok(&["memory", "import", file.to_str().unwrap()]);
    assert!(imported.contains("imported 2, skipped 0"), "{imported}");
    assert!(imported.contains("pinned, so in every conversation from now on: 1, 2;"), "{imported}");
    assert_eq!(other.ok(&["memory", "export"]), exported, "export → import → export is the identity");
    assert!(other.ok(&["memory", "import", file.to_str().unwrap()]).contains("imported 0, skipped 2"));
    let found = other.ok(&["memory", "search", "tulips"]);
    assert!(found.contains("Ada likes tulips") && found.contains("#people #flowers"), "{found}");
    // New ids continue after the imported ones.
    assert!(other.ok(&["memory", "add", "next"]).contains("remembered as 3"));
    let bad = other.cli_stdin(&["memory", "import", "-"], "{not json}\n");
    assert!(!bad.status.success() && stderr(&bad).contains("line 1"), "{}", stderr(&bad));
}

/// A memory file can come from anywhere: what it holds is held to what a
/// save is. Before, a line of any length was imported, and recalled into
/// prompts (pinned, into every one) whole.
#[test]
fn an_imported_file_is_held_to_what_a_save_is() {
    let env = Env::new();
    let line = |text: &str, tags: usize| {
        let tags: Vec<String> = (0..tags).map(|i| format!("t{i}")).collect();
        serde_json::json!({"id": 0, "text": text, "tags": tags, "source": "cli", "created_ms": 1, "pinned": true})
            .to_string()
    };
    let long = "word ".repeat(4000);
    for (file, why) in [
        (format!("{}\n{}\n", line("fine", 0), line(&long, 0)), "line 2: a memory is 1 to 16384 bytes of text"),
        (format!("{}\n", line("tagged", 17)), "line 1: a memory has at most 16 tags"),
        (format!("{}\n", line("  ", 0)), "line 1: a memory is 1 to 16384 bytes"),
    ] {
        let out = env.cli_stdin(&["memory", "import", "-"], &file);
        assert!(!out.status.success() && stderr(&out).contains(why), "{}", stderr(&out));
    }
    assert!(env.ok(&["memory", "export"]).is_empty(), "a refused file adds nothing");
    let big = env.cli(&["memory", "add", &long]);
    assert!(!big.status.success() && stderr(&big).contains("1 to 16384 bytes"), "{}", stderr(&big));
}

/// JSON lines of memories `ids`, each with its own word.
/// Memories exported by another wasiclaw (a laptop's, into a Pi's) come
/// numbered as there: one whose id is taken here is kept under a new one,
/// not skipped as if it were here already; a line without an id is kept
/// once, however often the file is imported.
#[test]
fn an_import_from_another_wasiclaw_keeps_every_memory() {
    let (laptop, pi) = (Env::new(), Env::new());
    for text in ["the laptop's first", "the laptop's second"] {
        laptop.ok(&["memory", "add", text]);
    }
    for text in ["the pi's first", "the pi's second"] {
        pi.ok(&["memory", "add", text]);
    }
    let mut jsonl = laptop.ok(&["memory", "export"]);
    jsonl.push_str("{\"id\": 0, \"text\": \"written by hand\", \"source\": \"cli\", \"created_ms\": 0}\n");
    let file = pi.path().join("laptop.jsonl");
    std::fs::write(&file, jsonl).unwrap();
    let said = pi.ok(&["memory", "import", file.to_str().unwrap()]);
    assert!(said.contains("imported 3, skipped 0"), "{said}");
    let all = pi.ok(&["memory", "export"]);
    for text in ["the laptop's first", "the laptop's second", "the pi's first", "the pi's second", "written by hand"] {
        assert!(all.contains(text), "{text} is missing:\n{all}");
    }
    let again = pi.ok(&["memory", "import", file.to_str().unwrap()]);
    assert!(again.contains("imported 0, skipped 3"), "{again}");
    assert_eq!(pi.ok(&["memory", "export"]).lines().count(), 5);
}

fn memories_jsonl(ids: std::ops::RangeInclusive<u64>) -> String {
    ids.map(|i| {
        let m =
            serde_json::json!({"id": i, "text": format!("fact {i} about word{i}"), "source": "cli", "created_ms": 0});
        format!("{m}\n")
    })
    .collect()
}

/// An import cut short (here killed while its 60th memory is embedded)
/// keeps the batches it stored, and run again adds the rest. Before, it
/// embedded the whole file, then stored it in one commit: a restart an hour
/// into a large import kept nothing of what it had paid for.
#[tokio::test(flavor = "multi_thread")]
async fn an_import_cut_short_keeps_what_it_stored() {
    let embeddings = Recorder::start(serde_json::json!({"data": [{"embedding": [0.5, 0.25], "index": 0}]})).await;
    *embeddings.hold.lock().unwrap() = Some("about word60\"".into());
    let env = Env::new();
    env.config(&format!("[memory.embeddings]\nbase_url = \"{}/v1\"\nmodel = \"fake-embed\"", embeddings.base));
    let file = env.path().join("mem.jsonl");
    std::fs::write(&file, memories_jsonl(1..=120)).unwrap();
    let mut import = std::process::Command::new(env!("CARGO_BIN_EXE_wasiclaw"))
        .arg("--state-dir")
        .arg(env.path())
        .args(["memory", "import", file.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    embeddings.wait("/embeddings", 60).await;
    import.kill().unwrap();
    import.wait().unwrap();
    assert_eq!(env.ok(&["memory", "export"]).lines().count(), 50, "the first batch of 50 was not kept");

    *embeddings.hold.lock().unwrap() = None;
    let again = env.ok(&["memory", "import", file.to_str().unwrap()]);
    assert!(again.contains("imported 70, skipped 50"), "{again}");
    assert_eq!(env.ok(&["memory", "export"]).lines().count(), 120);
    assert_eq!(embeddings.seen().len(), 60 + 70, "only what was not stored is embedded again");
}

/// An import shows its progress while it embeds and embeds nothing already
/// present; a dead embeddings endpoint costs a few tries, not its timeout
/// for every memory: the rest are imported for keyword search, and the
/// owner is told.
#[tokio::test(flavor = "multi_thread")]
async fn an_import_shows_progress_and_outlives_a_dead_embeddings_endpoint() {
    let answer = serde_json::json!({"data": [{"embedding": [0.5, 0.25], "index": 0}]});
    let embeddings = Recorder::start(answer.clone()).await;
    let env = Env::new();
    let embed_at =
        |base: &str| env.config(&format!("[memory.embeddings]\nbase_url = \"{base}/v1\"\nmodel = \"fake-embed\""));
    embed_at(&embeddings.base);
    let file = env.path().join("mem.jsonl");
    std::fs::write(&file, memories_jsonl(1..=120)).unwrap();
    let out = env.cli(&["memory", "import", file.to_str().unwrap()]);
    assert!(stdout(&out).contains("imported 120, skipped 0"), "{}", stderr(&out));
    let progress = stderr(&out);
    assert!(progress.contains("embedded 50 of 120 memories") && progress.contains("embedded 100 of 120"), "{progress}");
    assert_eq!(embeddings.seen().len(), 120);
    assert!(env.ok(&["memory", "import", file.to_str().unwrap()]).contains("imported 0, skipped 120"));
    assert_eq!(embeddings.seen().len(), 120, "memories already present were embedded");

    let dead = Recorder::failing(answer, usize::MAX).await;
    embed_at(&dead.base);
    std::fs::write(&file, memories_jsonl(121..=140)).unwrap();
    let said = env.ok(&["memory", "import", file.to_str().unwrap()]);
    assert!(said.contains("imported 20, skipped 0"), "{said}");
    assert!(
        said.contains("embeddings stopped (embeddings: HTTP 503") && said.contains("wasiclaw memory embed"),
        "{said}"
    );
    assert_eq!(dead.seen().len(), 1, "a dead endpoint was asked for every memory");
    assert!(env.ok(&["memory", "search", "word140"]).contains("fact 140 about word140"));

    // Back up: the memories left without an embedding get one.
    embed_at(&embeddings.base);
    let out = env.cli(&["memory", "embed"]);
    assert!(stdout(&out).contains("embedded 20 memories; 0 have none"), "{}", stderr(&out));
    assert_eq!(embeddings.seen().len(), 140);
    assert!(env.ok(&["memory", "embed"]).contains("embedded 0 memories; 0 have none"));
    assert_eq!(embeddings.seen().len(), 140);
}

/// An embeddings endpoint that fails is left alone for a while: every
/// turn's recall embeds its query, and one that is off would add its
/// timeout to every reply. Keyword search carries on.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_embeddings_endpoint_is_not_asked_on_every_search() {
    let dead = Recorder::failing(serde_json::json!({}), usize::MAX).await;
    let env = Env::new();
    env.config(&format!("[memory.embeddings]\nbase_url = \"{}/v1\"\nmodel = \"fake-embed\"", dead.base));
    let rt = env.runtime().await;
    rt.memories().save("the spare key is under the blue pot", vec![], "cli", false).await.unwrap();
    for _ in 0..5 {
        let hits = rt.memories().search("spare key", 3).await.unwrap();
        assert_eq!(hits[0].memory.text, "the spare key is under the blue pot");
    }
    assert_eq!(dead.seen().len(), 1);
    // `wasiclaw status` says so.
    let envelope = wasiclaw::api::Envelope::new(wasiclaw::api::Request::Status);
    let wasiclaw::api::Reply::Ok(wasiclaw::api::Response::Status(status)) =
        wasiclaw::api::dispatch(&rt, None, None, envelope, &|_| {}).await
    else {
        panic!("no status")
    };
    assert!(status.embeddings_paused.is_some_and(|why| why.contains("HTTP 503")));
    drop(rt);
    let none = Env::new();
    let refused = none.cli(&["memory", "embed"]);
    assert!(!refused.status.success() && stderr(&refused).contains("no [memory.embeddings]"), "{}", stderr(&refused));
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
    // A memory is indexed word by word and recalled into prompts: the
    // model's are held to the size a component's are.
    let long: &'static str = format!(r#"{{"text":"{}"}}"#, "word ".repeat(4000)).leak();
    let query: &'static str = format!(r#"{{"query":"{}"}}"#, "word ".repeat(400)).leak();
    let llm = FakeLlm::start(vec![
        Reply::Tools(vec![
            ("memory_save", r#"{"text":"Ada likes tulips","tags":["people"]}"#),
            ("memory_save", long),
            ("memory_search", query),
        ]),
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
    assert!(rt.db.memory_all().unwrap().iter().all(|m| m.text.len() <= 16 << 10), "a 20 KB memory was saved");
    let answers = llm.requests()[1]["messages"].to_string();
    assert!(
        answers.contains("a memory is 1 to 16384 bytes of text") && answers.contains("a query is at most 1024 bytes")
    );
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
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600);
    let live = env.path().join("wasiclaw.redb");
    let refused = env.cli(&["backup", live.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "the live database is not a backup target");
    // In a shared directory another user may have left a link where the
    // copy is made: it is not followed.
    // A directory gets a copy named by the time, as the automatic ones are.
    let folder = tempfile::tempdir().unwrap();
    let said = env.ok(&["backup", folder.path().to_str().unwrap()]);
    let copies: Vec<_> = std::fs::read_dir(folder.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let name = copies[0].to_str().unwrap();
    assert!(name.starts_with("wasiclaw-") && name.ends_with("Z.redb") && said.contains(name), "{said}");
    let victim = env.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, env.path().join("trap.partial")).unwrap();
    let trapped = env.cli(&["backup", env.path().join("trap.redb").to_str().unwrap()]);
    assert!(!trapped.status.success() && stderr(&trapped).contains("trap.partial exists"), "{}", stderr(&trapped));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious", "the backup wrote through a link");
    drop(daemon);
    // Restore into a fresh state dir, as the help says.
    let restored = Env::new();
    std::fs::copy(&backup, restored.path().join("wasiclaw.redb")).unwrap();
    let list = restored.ok(&["memory", "list"]);
    assert!(list.contains("boiler code is 4471") && list.contains("birthday is in May"), "{list}");
}

/// A memory the model forgets (it may have misread which one was meant)
/// is kept for the owner to bring back, as it was; one the owner forgets
/// is gone for good.
#[tokio::test(flavor = "multi_thread")]
async fn what_the_model_forgets_the_owner_can_bring_back() {
    let llm =
        FakeLlm::start(vec![Reply::Tools(vec![("memory_forget", r#"{"id":1}"#)]), Reply::Text("Forgotten.")]).await;
    let env = Env::new();
    env.config(&format!("[[providers]]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"m\"", llm.base));
    env.ok(&["memory", "add", "--pin", "the boiler code is 4471"]);
    env.ok(&["memory", "add", "Ada's birthday is in May"]);
    {
        let rt = Arc::new(env.runtime().await);
        let agent = Agent::new(rt.clone(), None).await;
        agent.turn("t:1", "forget the birthday", &|_| {}).await.unwrap();
    }
    let list = env.ok(&["memory", "list"]);
    assert!(!list.contains("4471") && list.contains("in May"), "{list}");
    assert!(!env.ok(&["memory", "search", "boiler"]).contains("4471"), "a forgotten memory is still found");
    let forgotten = env.ok(&["memory", "forgotten"]);
    assert!(forgotten.contains("the boiler code is 4471") && forgotten.contains("memory restore 1"), "{forgotten}");

    assert_eq!(env.ok(&["memory", "restore", "1"]).trim(), "brought back 1");
    let list = env.ok(&["memory", "list"]);
    assert!(list.contains("📌 the boiler code is 4471"), "not as it was: {list}");
    assert!(env.ok(&["memory", "search", "boiler"]).contains("4471"), "not found again");
    assert!(env.ok(&["memory", "forgotten"]).starts_with("the model forgot nothing"));

    // The owner's forget erases.
    env.ok(&["memory", "forget", "2"]);
    assert!(!env.ok(&["memory", "forgotten"]).contains("in May"));
    let again = env.cli(&["memory", "restore", "2"]);
    assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));
}

/// `wasiclaw restore` puts a backup back: only with the daemon stopped,
/// only a backup that checks out, keeping the database it replaces and
/// leaving the backup as it was.
#[test]
fn restore_puts_a_backup_back_and_keeps_what_it_replaced() {
    let env = Env::new();
    let (settings, persona) = ("[agent]\nmax_tool_iterations = 5\n", "You are Ada's assistant.\n");
    env.config(settings);
    std::fs::write(env.path().join("persona.md"), persona).unwrap();
    env.ok(&["memory", "add", "the boiler code is 4471"]);
    env.install("clock");
    env.ok(&["skills", "approve", "clock"]);
    assert!(env.cli_stdin(&["secrets", "set", "BOT_TOKEN"], "tok-7f3a9c2e\n").status.success());
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("monday.redb");
    env.ok(&["backup", backup.to_str().unwrap()]);
    let taken = std::fs::read(&backup).unwrap();
    assert!(!taken.windows(12).any(|w| w == b"tok-7f3a9c2e"), "a secret is in the backup");
    env.ok(&["memory", "add", "Ada's birthday is in May"]);
    let both = |list: &str| list.contains("4471") && list.contains("in May");

    let daemon = env.daemon();
    let refused = env.cli(&["restore", backup.to_str().unwrap()]);
    assert!(!refused.status.success() && stderr(&refused).contains("stop it first"), "{}", stderr(&refused));
    assert!(both(&env.ok(&["memory", "list"])));
    drop(daemon);

    let junk = backups.path().join("junk.redb");
    std::fs::write(&junk, vec![7u8; 8192]).unwrap();
    let refused = env.cli(&["restore", junk.to_str().unwrap()]);
    let said = stderr(&refused);
    assert!(!refused.status.success() && said.contains("junk.redb is not a wasiclaw database"), "{said}");
    assert!(both(&env.ok(&["memory", "list"])), "a bad backup changed the database");

    // Settings changed since: the backup's are put beside them, not over them.
    env.config("[agent]\nmax_tool_iterations = 6\n");
    let said = env.ok(&["restore", backup.to_str().unwrap()]);
    assert!(said.contains("restored") && said.contains(": 1 memory, 0 scheduled jobs"), "{said}");
    assert!(said.contains("config.toml differs from the backup's"), "{said}");
    assert!(said.contains("rights come back for: clock"), "{said}");
    assert_eq!(std::fs::read_to_string(env.path().join("config.toml")).unwrap(), "[agent]\nmax_tool_iterations = 6\n");
    assert_eq!(std::fs::read_to_string(env.path().join("config.toml.from-backup")).unwrap(), settings);
    let list = env.ok(&["memory", "list"]);
    assert!(list.contains("4471") && !list.contains("in May"), "{list}");
    assert_eq!(std::fs::read(&backup).unwrap(), taken, "the backup was changed");
    // What it replaced is kept, and opens.
    let kept = said.split("kept as ").nth(1).and_then(|k| k.split(';').next()).expect("where it was kept");
    let before = Env::new();
    std::fs::copy(kept, before.path().join("wasiclaw.redb")).unwrap();
    assert!(both(&before.ok(&["memory", "list"])));
    // A new card, with no state dir yet.
    let card = tempfile::tempdir().unwrap();
    let state = card.path().join("wasiclaw");
    let run = |args: &[&str]| {
        let mut wasiclaw = std::process::Command::new(env!("CARGO_BIN_EXE_wasiclaw"));
        let out = wasiclaw.arg("--state-dir").arg(&state).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let said = run(&["restore", backup.to_str().unwrap()]);
    assert!(said.contains("config.toml put back") && said.contains("persona.md put back"), "{said}");
    assert!(run(&["memory", "list"]).contains("4471"));
    assert_eq!(std::fs::read_to_string(state.join("config.toml")).unwrap(), settings);
    assert_eq!(std::fs::read_to_string(state.join("persona.md")).unwrap(), persona);
    // Secrets stay out of backups.
    assert!(!state.join("secrets.json").exists());
    // A backup someone else made can put back only those two files: not a
    // secrets store, a skill, or a file outside the state dir.
    let forged = backups.path().join("forged.redb");
    std::fs::copy(&backup, &forged).unwrap();
    {
        let db = redb::Database::open(&forged).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut files = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("backup_files")).unwrap();
            let absolute = card.path().join("absolute.txt");
            for name in ["secrets.json", "skills/evil.wasm", "../outside.txt", absolute.to_str().unwrap()] {
                files.insert(name, b"{}".as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let other = card.path().join("other");
    let mut wasiclaw = std::process::Command::new(env!("CARGO_BIN_EXE_wasiclaw"));
    let out = wasiclaw.arg("--state-dir").arg(&other).args(["restore", forged.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(other.join("config.toml").exists());
    let planted = ["secrets.json", "skills/evil.wasm", "../outside.txt", "../absolute.txt"].map(|p| other.join(p));
    for file in planted {
        assert!(!file.exists(), "{} was written from a backup", file.display());
    }
}

/// With `[storage] backup_dir` set, the daemon copies the database there
/// when none is recent and keeps the newest `backup_keep`, removing only
/// its own copies; a directory that is not there is reported, never made.
#[test]
fn the_daemon_keeps_daily_backups_where_the_owner_said() {
    let env = Env::new();
    let drive = tempfile::tempdir().unwrap();
    let dir = drive.path().join("wasiclaw");
    env.config(&format!(
        "[storage]\nbackup_dir = \"{}\"\nbackup_keep = 2\n\n[agent]\nowner_chat = \"webhook:owner\"\n",
        dir.display()
    ));
    env.ok(&["memory", "add", "the boiler code is 4471"]);
    // The drive is not mounted: the owner hears why, and nothing is made.
    let daemon = env.daemon();
    crate::support::wait_for("the failure to be told", Duration::from_secs(30), || {
        env.ok(&["notifications"]).contains("does not exist (is its drive mounted?)")
    });
    assert!(!dir.exists(), "the backup directory was created");
    let told = env.ok(&["outbox"]);
    assert!(
        told.contains("webhook") && told.contains("The automatic backup to"),
        "not told in the owner's chat: {told}"
    );
    assert!(env.ok(&["status"]).contains("backups: the last backup failed"), "{}", env.ok(&["status"]));
    let doctor = env.cli(&["doctor"]);
    assert!(stdout(&doctor).contains("the last backup failed"), "{}", stdout(&doctor));
    drop(daemon);

    std::fs::create_dir(&dir).unwrap();
    let old = ["wasiclaw-20200101T000000Z.redb", "wasiclaw-20200102T000000Z.redb", "wasiclaw-20200103T000000Z.redb"];
    let others = ["notes.txt", "wasiclaw.redb", "wasiclaw-20200101T000000Z.redb.keep"];
    for name in old.iter().chain(&others).chain(&["wasiclaw-20200104T000000Z.partial"]) {
        std::fs::write(dir.join(name), "not ours to lose").unwrap();
    }
    let names = || {
        let mut n: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        n.sort();
        n
    };
    // A copy taken again within the same second keeps its name, not its inode.
    let inodes = || {
        use std::os::unix::fs::MetadataExt;
        names().iter().map(|n| std::fs::metadata(dir.join(n)).unwrap().ino()).collect::<Vec<_>>()
    };
    let daemon = env.daemon();
    crate::support::wait_for("a new copy", Duration::from_secs(30), || names().len() == 5);
    let kept = names();
    let new = kept.iter().find(|n| n.starts_with("wasiclaw-") && !n.starts_with("wasiclaw-2020")).expect("a new copy");
    let mut expected: Vec<String> = [old[2], new.as_str()].iter().chain(&others).map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(kept, expected, "only the oldest copies and the unfinished one go");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.join(new)).unwrap().permissions().mode() & 0o777, 0o600);
    let status = env.ok(&["status"]);
    assert!(status.contains(&format!("backups: 2 kept in {}, the newest {new}", dir.display())), "{status}");
    drop(daemon);
    // A restart with a recent copy takes none.
    let before = inodes();
    let daemon = env.daemon();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((names(), inodes()), (kept.clone(), before), "a copy was taken again");
    let doctor = env.cli(&["doctor"]);
    assert!(stdout(&doctor).contains(&format!("2 kept in {}", dir.display())), "{}", stdout(&doctor));
    drop(daemon);
    // A copy someone else put there would, restored, bring their grants.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let doctor = stdout(&env.cli(&["doctor"]));
    assert!(doctor.contains("PROBLEM  backup") && doctor.contains("other users may add or replace"), "{doctor}");

    let restored = Env::new();
    std::fs::copy(dir.join(new), restored.path().join("wasiclaw.redb")).unwrap();
    assert!(restored.ok(&["memory", "list"]).contains("boiler code is 4471"));
}

/// BM25 over the given memories, computed from their texts alone: what the
/// index must agree with.
fn brute_force(memories: &[(u64, String)], query: &str, k: usize) -> Vec<u64> {
    use std::collections::HashMap;
    use wasiclaw::memory::terms;
    let docs: Vec<(u64, Vec<String>)> = memories.iter().map(|(id, t)| (*id, terms(t))).collect();
    let n = docs.len() as f64;
    let avgdl = (docs.iter().map(|(_, w)| w.len() as f64).sum::<f64>() / n).max(1.0);
    let mut query = terms(query);
    query.sort();
    query.dedup();
    let mut scores: HashMap<u64, f64> = HashMap::new();
    for term in &query {
        let df = docs.iter().filter(|(_, w)| w.contains(term)).count() as f64;
        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        for (id, words) in &docs {
            let tf = words.iter().filter(|w| *w == term).count() as f64;
            if tf > 0.0 {
                let dl = words.len() as f64;
                *scores.entry(*id).or_default() +=
                    idf * tf * (1.2 + 1.0) / (tf + 1.2 * (1.0 - 0.75 + 0.75 * dl / avgdl));
            }
        }
    }
    let mut ranked: Vec<(u64, f64)> = scores.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.into_iter().take(k).map(|(id, _)| id).collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 16, failure_persistence: None, ..Default::default() })]

    /// Whatever was saved, imported out of order and forgotten, keyword
    /// search returns exactly the top k of BM25 over the memories that
    /// remain. Few distinct words make posting lists long enough to split
    /// into several blocks and to be pruned.
    #[test]
    fn keyword_search_is_exact_bm25(
        // Word 11 is drawn nine times in twenty: a long list, split and pruned.
        texts in proptest::collection::vec(proptest::collection::vec(proptest::strategy::Strategy::prop_map(0usize..20, |w| w.min(11)), 1..9), 150..400),
        imported in proptest::collection::vec((1u64..2000, proptest::collection::vec(0usize..12, 1..6)), 0..40),
        forget in proptest::collection::vec(0usize..400, 0..120),
        queries in proptest::collection::vec(proptest::collection::vec(0usize..14, 1..4), 8),
        k in 1usize..25,
    ) {
        const WORDS: [&str; 14] =
            ["apple", "boat", "cloud", "delta", "ember", "frost", "grape", "harbor", "iris", "jade", "kite", "lemon", "mango", "nutmeg"];
        let words = |ws: &[usize]| ws.iter().map(|w| WORDS[*w]).collect::<Vec<_>>().join(" ");
        let dir = tempfile::tempdir().unwrap();
        let db = wasiclaw::store::Store::open(&dir.path().join("db"), &wasiclaw::runtime::TABLES).unwrap();
        let memory = |id: u64, text: String| wasiclaw::memory::Memory {
            id, text, tags: vec![], source: "test".into(), created_ms: 0, pinned: false,
        };
        let mut kept: Vec<(u64, String)> = Vec::new();
        for chunk in texts.chunks(50) {
            let stored = db.memory_insert(chunk.iter().map(|ws| (memory(0, words(ws)), None)).collect()).unwrap();
            kept.extend(stored.into_iter().map(|m| (m.id, m.text)));
        }
        // Imports carry their own ids, some below those already stored.
        let fresh = imported.iter().map(|(id, ws)| (memory(*id, words(ws)), None)).collect();
        kept.extend(db.memory_insert(fresh).unwrap().into_iter().map(|m| (m.id, m.text)));
        for i in forget {
            if let Some(&(id, _)) = kept.get(i % kept.len().max(1)) {
                proptest::prop_assert!(db.memory_forget(id).unwrap());
                kept.retain(|(kid, _)| *kid != id);
            }
        }
        for q in &queries {
            let query = words(q);
            let got: Vec<u64> = db.memory_bm25(&query, k).unwrap().into_iter().map(|(id, _)| id).collect();
            proptest::prop_assert_eq!(got, brute_force(&kept, &query, k), "query {:?}", query);
        }
    }
}

/// A database written before the term dictionary (postings keyed by term
/// string, lengths apart) opens with its memories searchable, and stays so.
#[test]
fn an_index_from_before_the_term_dictionary_is_rebuilt_at_open() {
    use redb::TableDefinition;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let texts = ["The dentist appointment is on Tuesday", "Ben is allergic to peanuts"];
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut memories = txn.open_table(TableDefinition::<u64, &[u8]>::new("memories")).unwrap();
            let mut postings = txn.open_table(TableDefinition::<(&str, u64), u32>::new("memory_postings")).unwrap();
            let mut lengths = txn.open_table(TableDefinition::<u64, u32>::new("memory_lengths")).unwrap();
            let mut meta = txn.open_table(TableDefinition::<&str, u64>::new("memory_meta")).unwrap();
            let mut total = 0;
            for (i, text) in texts.iter().enumerate() {
                let id = i as u64 + 1;
                let m = wasiclaw::memory::Memory {
                    id,
                    text: text.to_string(),
                    tags: vec![],
                    source: "cli".into(),
                    created_ms: 0,
                    pinned: false,
                };
                memories.insert(id, serde_json::to_vec(&m).unwrap().as_slice()).unwrap();
                let words = wasiclaw::memory::terms(text);
                for w in &words {
                    postings.insert((w.as_str(), id), 1).unwrap();
                }
                lengths.insert(id, words.len() as u32).unwrap();
                total += words.len() as u64;
            }
            meta.insert("next_id", 3).unwrap();
            meta.insert("docs", 2).unwrap();
            meta.insert("total_len", total).unwrap();
        }
        txn.commit().unwrap();
    }
    for _ in 0..2 {
        let db = wasiclaw::store::Store::open(&path, &wasiclaw::runtime::TABLES).unwrap();
        let ids = |q: &str| db.memory_bm25(q, 5).unwrap().into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        assert_eq!(ids("peanut allergy"), [2]);
        if db.memory_all().unwrap().len() == 2 {
            assert_eq!(ids("when is the dentist?"), [1]);
            assert_eq!(db.memory_add("Dentist called", vec![], "cli", false, None).unwrap().id, 3);
        }
        assert_eq!(ids("dentist"), [3, 1], "the shorter memory ranks first");
    }
}
