//! Per-call limits, tested with tiny inline WAT components so each limit is
//! exercised by exactly the code that should trip it.

use crate::support::Env;
use std::sync::Arc;
use wasiclaw::budget::Budget;
use wasiclaw::config::Limits;
use wasiclaw::context::system_resolver;
use wasiclaw::engine::{CallError, HostCtx, SkillEngine};
use wasiclaw::grants::Effective;
use wasiclaw::secrets::Secrets;
use wasiclaw::store::Store;
use wasmtime::component::Component;

fn setup(limits: Limits) -> (Env, SkillEngine, HostCtx) {
    let env = Env::new();
    let engine = SkillEngine::new(env.path().join("cache"), limits.clone(), &Default::default()).unwrap();
    let ctx = HostCtx::new(
        "wat",
        "0",
        Effective::default(),
        Arc::new(Store::open(&env.path().join("db.redb"), &wasiclaw::runtime::TABLES).unwrap()),
        Secrets::new(env.path().join("secrets.json")),
        Arc::new(limits.clone()),
        Arc::new(Budget::new(&limits)),
        system_resolver(),
    );
    (env, engine, ctx)
}

/// Instantiate `wat` in a fresh store and call its export `func` -> u32.
async fn call_u32(engine: &SkillEngine, ctx: &HostCtx, wat: &str, func: &'static str) -> Result<u32, CallError> {
    let component = Component::new(&engine.engine, wat).unwrap();
    let mut store = engine.store(component.engine(), ctx.clone(), None)?;
    let linker = engine.linker(&component).clone();
    engine
        .guarded(&mut store, move |store| {
            Box::pin(async move {
                let instance = linker.instantiate_async(&mut *store, &component).await?;
                let f = instance.get_typed_func::<(), (u32,)>(&mut *store, func)?;
                Ok(f.call_async(&mut *store, ()).await?.0)
            })
        })
        .await
}

const SPIN: &str = r#"(component
  (core module $m (func (export "spin") (result i32) (loop $l (br $l)) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func (export "spin") (result u32) (canon lift (core func $i "spin"))))"#;

const GROW: &str = r#"(component
  (core module $m
    (memory 1)
    (func (export "grow") (result i32)
      (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
      (memory.size)))
  (core instance $i (instantiate $m))
  (func (export "grow") (result u32) (canon lift (core func $i "grow"))))"#;

/// Grows a table by a million elements at a time until refused; returns
/// the table's size.
const TABLE: &str = r#"(component
  (core module $m
    (table $t 1 funcref)
    (func (export "grow") (result i32)
      (loop $l (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 1000000)) (i32.const -1))))
      (table.size $t)))
  (core instance $i (instantiate $m))
  (func (export "grow") (result u32) (canon lift (core func $i "grow"))))"#;

const BUMP: &str = r#"(component
  (core module $m
    (global $n (mut i32) (i32.const 0))
    (func (export "bump") (result i32)
      (global.set $n (i32.add (global.get $n) (i32.const 1)))
      (global.get $n)))
  (core instance $i (instantiate $m))
  (func (export "bump") (result u32) (canon lift (core func $i "bump"))))"#;

#[tokio::test(flavor = "multi_thread")]
async fn cpu_budget_stops_an_infinite_loop() {
    let (_env, engine, ctx) = setup(Limits { cpu_ms: 200, ..Limits::default() });
    let started = std::time::Instant::now();
    let err = call_u32(&engine, &ctx, SPIN, "spin").await.unwrap_err();
    assert!(matches!(err, CallError::Cpu(200)), "got {err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the loop was not stopped by the CPU budget");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_cap_holds_against_growth() {
    let (_env, engine, ctx) = setup(Limits { memory_mb: 8, ..Limits::default() });
    let pages = call_u32(&engine, &ctx, GROW, "grow").await.unwrap();
    assert!(pages * 64 * 1024 <= 8 << 20, "memory grew to {pages} pages, past the 8 MiB cap");
    assert!(pages * 64 * 1024 > 4 << 20, "growth stopped far below the cap ({pages} pages)");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_gets_a_fresh_store() {
    let (_env, engine, ctx) = setup(Limits::default());
    assert_eq!(call_u32(&engine, &ctx, BUMP, "bump").await.unwrap(), 1);
    assert_eq!(call_u32(&engine, &ctx, BUMP, "bump").await.unwrap(), 1, "state leaked between calls");
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_draw_on_the_memory_budget() {
    let (_env, engine, ctx) = setup(Limits { memory_mb: 32, ..Limits::default() });
    let elements = call_u32(&engine, &ctx, TABLE, "grow").await.unwrap() as usize;
    // 16 bytes an element on the host: 32 MiB is about two million.
    assert!(elements * 16 <= 32 << 20, "the table grew to {elements} elements, past the 32 MiB cap");
    assert!(elements >= 1_000_000, "growth stopped before the cap ({elements} elements)");
}

const RECURSE: &str = r#"(component
  (core module $m (func $r (export "recurse") (result i32) (call $r)))
  (core instance $i (instantiate $m))
  (func (export "recurse") (result u32) (canon lift (core func $i "recurse"))))"#;

/// Calls run on stacks kept for the next call: sequential calls reuse one,
/// a guest that overflows its stack is stopped with a trap, and the call
/// after it runs normally on the same kept stack.
#[tokio::test(flavor = "multi_thread")]
async fn call_stacks_are_reused_and_overflow_still_traps() {
    let (_env, engine, ctx) = setup(Limits::default());
    assert_eq!(engine.stacks.kept(), 0);
    for _ in 0..3 {
        assert_eq!(call_u32(&engine, &ctx, BUMP, "bump").await.unwrap(), 1);
    }
    assert_eq!(engine.stacks.kept(), 1, "sequential calls did not share one stack");
    let err = call_u32(&engine, &ctx, RECURSE, "recurse").await.unwrap_err();
    assert!(matches!(&err, CallError::Trap(m) if m.contains("call stack exhausted")), "got {err:?}");
    assert_eq!(call_u32(&engine, &ctx, BUMP, "bump").await.unwrap(), 1);
    assert_eq!(engine.stacks.kept(), 1);
    // Concurrent calls each get their own; at most KEEP are kept after.
    let calls = (0..12).map(|_| call_u32(&engine, &ctx, BUMP, "bump"));
    for result in futures_util::future::join_all(calls).await {
        assert_eq!(result.unwrap(), 1);
    }
    assert!((1..=wasiclaw::stacks::KEEP).contains(&engine.stacks.kept()));
}
