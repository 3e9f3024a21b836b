//! The wasmtime engine, the linker every component gets, the per-call store
//! and the limits around every call.
//!
//! Invariants:
//! - A fresh `Store` per call: nothing survives a call except through
//!   granted kv or files.
//! - All of WASI p2 and `wasi:http` are linked so components from any
//!   toolchain instantiate; authority is denied at run time instead: no
//!   preopens unless `files` is granted, empty env and args, no sockets,
//!   egress only through `egress::EgressHooks`.
//! - Every call runs under a memory cap (ResourceLimiter), a CPU budget
//!   (epoch ticks spent in guest code) and a wall-clock timeout (which also
//!   covers a guest blocked in a host call, where epochs cannot reach).
//! - The epoch ticker runs only while a call is in flight.
//! - No pooling allocator: it needs more address space than small ARM boards have.
//!   Two engines instead: components of at most [`SMALL`] bytes run on
//!   memories kept between calls and cleared in place (`memories.rs`),
//!   larger ones on fresh mappings with copy-on-write data images. A
//!   compiled component belongs to the engine that compiled it, and its
//!   stores and linker are that engine's.

use crate::config::{CompileConfig, Compiler, Limits};
pub use crate::context::HostCtx;
use crate::egress::EgressHooks;
pub use crate::state::{MemoryLimiter, SkillState};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;

pub use crate::contract::Error as ToolError;

/// A call into a guest, borrowing its store.
pub type GuestCall<'a, R> = std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

/// The most random bytes one `wasi:random` request may ask of the host.
pub const MAX_RANDOM: usize = 1 << 20;

/// One epoch tick; the CPU budget is counted in these.
pub const TICK: Duration = Duration::from_millis(10);

/// Why a call did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Over the wall-clock limit.
    #[error("timed out after {0:?} (wall-clock limit; raise [limits] timeout_ms in config.toml if this is expected)")]
    Timeout(Duration),
    /// Over the CPU budget (ms).
    #[error("used more than {0} ms of CPU (raise [limits] cpu_ms in config.toml if this is expected)")]
    Cpu(u64),
    /// Over the memory cap (MiB).
    #[error("tried to use more than {0} MiB of memory (the [limits] memory_mb cap)")]
    Memory(u64),
    /// The result's size and the cap.
    #[error("result is {0} bytes, over the {1}-byte cap ([limits] output_kb)")]
    Output(usize, usize),
    /// Over what a call may hold in the host through handles.
    #[error("tried to hold too much in the host: {0}")]
    HostMemory(String),
    /// The component trapped.
    #[error("the component crashed: {0}")]
    Trap(String),
    /// The component returned an error.
    #[error("{}", describe_tool_error(.0))]
    Tool(ToolError),
}

/// The most of a component's error text that is kept: it goes to logs, the
/// outbox's records and the model, and a component chooses its length.
pub const MAX_ERROR_TEXT: usize = 4 * 1024;

/// A tool error in words, with its kind; a component's text is cut to
/// [`MAX_ERROR_TEXT`] with its control characters escaped.
pub fn describe_tool_error(e: &ToolError) -> String {
    let (kind, m) = match e {
        ToolError::Denied(m) => ("denied", m),
        ToolError::InvalidInput(m) => ("invalid input", m),
        ToolError::NotFound(m) => ("not found", m),
        ToolError::Failed(m) => ("failed", m),
    };
    format!("{kind}: {}", crate::text::printable(&crate::text::truncate(m, MAX_ERROR_TEXT)))
}

/// Why the engine cannot run components.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Wasmtime refused its configuration.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Setup(String),
    #[error("cannot compile {path}: {message}")]
    /// A component does not compile.
    Compile {
        /// The file.
        path: PathBuf,
        /// The compiler's message.
        message: String,
    },
}

/// Components of at most this many bytes run on [`crate::memories`]:
/// their data segments are copied in at each call instead of mapped
/// copy-on-write, which costs less than the page faults it saves while the
/// data is small (`clock`, the largest bundled Rust skill, is 0.6 MB with
/// 0.3 MB of data; the script runner is 3.5 MB, a Python skill 18 MB).
pub const SMALL: usize = 1 << 20;

/// One wasmtime engine, every import linked for it (on first use: a warm
/// start that links no large component never links them for that engine),
/// and the configuration its compiles use.
#[derive(Clone)]
struct Flavor {
    engine: Engine,
    linker: Arc<std::sync::OnceLock<Arc<Linker<SkillState>>>>,
    config: Config,
}

impl Flavor {
    fn new(config: Config) -> Result<Flavor, EngineError> {
        let engine = Engine::new(&config).map_err(|e| EngineError::Setup(format!("{e:#}")))?;
        Ok(Flavor { engine, linker: Arc::default(), config })
    }

    fn linker(&self) -> &Arc<Linker<SkillState>> {
        self.linker.get_or_init(|| {
            let mut linker = Linker::new(&self.engine);
            // Only a name defined twice fails, a bug every test would hit.
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("WASI links");
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).expect("wasi:http links");
            crate::contract::add_to_linker(&mut linker).expect("the contract links");
            crate::files::meter(&mut linker).expect("metered file writes link");
            Arc::new(linker)
        })
    }
}

/// The wasmtime engines, their linkers and the compile cache.
#[derive(Clone)]
pub struct SkillEngine {
    /// The engine of components over [`SMALL`] bytes (and of every
    /// component off Linux): data images mapped copy-on-write.
    pub engine: Engine,
    large: Flavor,
    /// The engine of components of at most [`SMALL`] bytes, on memories
    /// kept between calls (Linux).
    small: Option<Flavor>,
    cache_dir: PathBuf,
    limits: Limits,
    compiler: Compiler,
    ticker: Arc<Ticker>,
    /// Guest `describe()` calls made, for tests of the manifest cache.
    pub describes: Arc<AtomicUsize>,
    /// The stacks calls run on, reused.
    pub stacks: Arc<crate::stacks::StackPool>,
    /// The linear memories of small components, reused.
    #[cfg(target_os = "linux")]
    pub memories: Arc<crate::memories::MemoryPool>,
    /// The script runner, compiled (or loaded from the cache) once and
    /// shared by every script skill.
    runner: Arc<std::sync::Mutex<Option<crate::contract::script_bindings::ScriptRunnerPre<SkillState>>>>,
}

/// The epoch ticker thread and the calls it ticks for.
struct Ticker {
    in_flight: Arc<AtomicUsize>,
    thread: std::thread::Thread,
}

/// One call in flight: the ticker runs until the last one ends.
struct Flight<'a>(&'a Ticker);

impl<'a> Flight<'a> {
    fn start(ticker: &'a Ticker) -> Self {
        if ticker.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            ticker.thread.unpark();
        }
        Flight(ticker)
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SkillEngine {
    /// An engine caching compiled components in `cache_dir`.
    pub fn new(cache_dir: PathBuf, limits: Limits, compile: &CompileConfig) -> Result<Self, EngineError> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true).parallel_compilation(compile.parallel());
        if compile.compiler == Compiler::Winch {
            if !cfg!(feature = "winch") {
                return Err(EngineError::Setup(
                    "[compile] compiler = \"winch\" needs a wasiclaw built with `--features winch`; \
                     remove the line to use cranelift"
                        .into(),
                ));
            }
            config.strategy(wasmtime::Strategy::Winch);
        }
        let stacks = Arc::new(crate::stacks::StackPool::default());
        config.with_host_stack(stacks.clone());
        #[cfg(target_os = "linux")]
        let memories = Arc::new(crate::memories::MemoryPool::default());
        #[cfg(target_os = "linux")]
        let small = {
            let mut small = config.clone();
            small.memory_init_cow(false).with_host_memory(memories.clone());
            Some(Flavor::new(small)?)
        };
        #[cfg(not(target_os = "linux"))]
        let small = None;
        let large = Flavor::new(config)?;
        // The ticker ends with the engines (it holds only weak references)
        // and sleeps while no call is in flight, so an idle host is idle.
        let weak: Vec<_> = small.iter().chain([&large]).map(|f| f.engine.weak()).collect();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let flying = in_flight.clone();
        let ticker = std::thread::Builder::new()
            .name("wasiclaw-epoch".into())
            .spawn(move || {
                // A tick comes a whole TICK after the ticker wakes, so a
                // call shorter than a tick never yields to tokio for a tick
                // it did not spend.
                while weak.iter().all(|w| w.upgrade().is_some()) {
                    if flying.load(Ordering::Acquire) == 0 {
                        std::thread::park_timeout(Duration::from_secs(10));
                        continue;
                    }
                    std::thread::sleep(TICK);
                    if flying.load(Ordering::Acquire) > 0 {
                        weak.iter().filter_map(|w| w.upgrade()).for_each(|e| e.increment_epoch());
                    }
                }
            })
            .map_err(|e| EngineError::Setup(e.to_string()))?;
        let ticker = Arc::new(Ticker { in_flight, thread: ticker.thread().clone() });
        Ok(SkillEngine {
            engine: large.engine.clone(),
            large,
            small,
            cache_dir,
            limits,
            compiler: compile.compiler,
            ticker,
            describes: Arc::default(),
            stacks,
            #[cfg(target_os = "linux")]
            memories,
            runner: Arc::default(),
        })
    }

    /// Unmap the memories kept for the next call (an idle daemon keeps none).
    pub fn release_kept(&self) {
        #[cfg(target_os = "linux")]
        self.memories.release();
    }

    /// The flavors, the one of small components first.
    fn flavors(&self) -> impl Iterator<Item = &Flavor> {
        self.small.iter().chain([&self.large])
    }

    /// The linker for a component compiled by one of these engines.
    pub fn linker(&self, component: &Component) -> &Arc<Linker<SkillState>> {
        let flavor = self.flavors().find(|f| Engine::same(&f.engine, component.engine()));
        flavor.unwrap_or(&self.large).linker()
    }

    /// The limits of every call.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A file of the compile cache.
    pub fn cache_file(&self, name: &str) -> PathBuf {
        self.cache_dir.join(name)
    }

    /// Where something derived from component `sha256` by this engine
    /// configuration is cached (the compiled code, what `describe` said).
    pub fn artifact(&self, sha256: &str, ext: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.flavors().for_each(|f| f.engine.precompile_compatibility_hash().hash(&mut h));
        self.compiler.hash(&mut h);
        self.cache_dir.join(format!("{sha256}-{:016x}.{ext}", h.finish()))
    }

    /// Compile a component, through the on-disk cache keyed by its sha256
    /// and the engine's compatibility hash.
    /// Without `bytes` only the cache can answer (the caller knows the
    /// file is unchanged since it was compiled).
    pub fn compile(&self, path: &Path, bytes: Option<&[u8]>, sha256: &str) -> Result<Component, EngineError> {
        let cached = self.artifact(sha256, "cwasm");
        if cached.exists() {
            // The file was compiled for one of the engines; another refuses
            // it at its header.
            // SAFETY: the cache lives in the owner's state dir and is only
            // written below, by these engine configurations.
            let mut refused = None;
            for flavor in self.flavors() {
                match unsafe { Component::deserialize_file(&flavor.engine, &cached) } {
                    Ok(component) => return Ok(component),
                    Err(e) => refused = Some(e),
                }
            }
            if let Some(e) = refused {
                tracing::warn!("ignoring bad compile cache {}: {e}", cached.display());
            }
        }
        let Some(bytes) = bytes else {
            return Err(EngineError::Compile { path: path.into(), message: "no compiled copy is cached".into() });
        };
        tracing::info!("compiling {} (once; the result is cached)", path.display());
        let fail = |e: wasmtime::Error| EngineError::Compile { path: path.into(), message: format!("{e:#}") };
        // With a compiler of its own, dropped after: wasmtime keeps a
        // compiler's working memory for its next compile, megabytes the
        // daemon would otherwise hold for good.
        let flavor = match &self.small {
            Some(small) if bytes.len() <= SMALL => small,
            _ => &self.large,
        };
        let serialized = Engine::new(&flavor.config).and_then(|c| c.precompile_component(bytes)).map_err(fail)?;
        crate::resident::release_freed_memory();
        let tmp = cached.with_extension("tmp");
        let written = std::fs::create_dir_all(&self.cache_dir)
            .and_then(|_| std::fs::write(&tmp, &serialized))
            .and_then(|_| std::fs::rename(&tmp, &cached));
        match written {
            // Run from the file: its pages are the kernel's to share and
            // reclaim, where code loaded from memory is private memory.
            // SAFETY: as above; it was written just now.
            Ok(()) => match unsafe { Component::deserialize_file(&flavor.engine, &cached) } {
                Ok(mapped) => return Ok(mapped),
                Err(e) => tracing::warn!("cannot load the compile cache {} just written: {e}", cached.display()),
            },
            Err(e) => tracing::warn!("cannot write compile cache {}: {e}", cached.display()),
        }
        // SAFETY: compiled just now by an engine of this configuration.
        unsafe { Component::deserialize(&flavor.engine, &serialized) }.map_err(fail)
    }

    /// The script runner ready to instantiate: compiled from the copy built
    /// into this binary the first time (cached like any component), then
    /// shared by every script skill.
    pub fn script_runner(&self) -> Result<crate::contract::script_bindings::ScriptRunnerPre<SkillState>, EngineError> {
        let mut held = self.runner.lock().unwrap();
        if let Some(pre) = held.as_ref() {
            return Ok(pre.clone());
        }
        let runner = crate::bundled::script_runner().ok_or_else(|| {
            EngineError::Setup("this wasiclaw was built without the script runner (`--no-default-features`)".into())
        })?;
        let path = Path::new("<the script runner>");
        let bytes = (!self.artifact(runner.sha256, "cwasm").exists()).then(|| runner.bytes());
        let component = self.compile(path, bytes.as_deref(), runner.sha256)?;
        let link = |e: wasmtime::Error| EngineError::Compile { path: path.into(), message: format!("{e:#}") };
        let pre = self.linker(&component).instantiate_pre(&component).map_err(link)?;
        let pre = crate::contract::script_bindings::ScriptRunnerPre::new(pre).map_err(link)?;
        *held = Some(pre.clone());
        Ok(pre)
    }

    /// A fresh store for one call with the call's rights and limits.
    /// `files_dir` is the private directory and the room the call may
    /// write there (none: read-only).
    /// `engine` is the one the guest was compiled for (`pre.engine()`).
    pub fn store(
        &self,
        engine: &Engine,
        host: HostCtx,
        files_dir: Option<(&Path, Option<Arc<crate::files::Room>>)>,
    ) -> Result<Store<SkillState>, CallError> {
        let stderr = MemoryOutputPipe::new(16 * 1024);
        let mut wasi = WasiCtxBuilder::new();
        // TCP and UDP stay "allowed" so that every address a guest tries
        // reaches the check below, which refuses it and leaves an audit
        // record. Name lookups have no such hook, so they stay off.
        let audit = host.clone();
        // wasmtime-wasi's default lets one request make the host allocate
        // 64 MiB; a larger request traps.
        wasi.max_random_size(MAX_RANDOM as u64);
        wasi.stderr(stderr.clone()).allow_tcp(true).allow_udp(true).allow_ip_name_lookup(false).socket_addr_check(
            move |addr, usage| {
                audit.audit("socket", &format!("{usage:?} {addr}"), false, "components get no sockets; use wasi:http");
                Box::pin(async { false })
            },
        );
        let mut files_room = None;
        if let Some((dir, room)) = files_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| CallError::Trap(format!("cannot create {}: {e}", dir.display())))?;
            let perms = if room.is_some() { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            files_room = room;
            wasi.preopened_dir(dir, "/data", perms)
                .map_err(|e| CallError::Trap(format!("cannot open {}: {e:#}", dir.display())))?;
        }
        let egress = EgressHooks::new(host.clone());
        // What a call can hold in the host through handles is bounded: an
        // HTTP handle's host side holds at most `egress::HELD_BYTES`.
        let handles = self.limits.handles as usize;
        let mut table = ResourceTable::new();
        table.set_max_capacity(handles);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(crate::egress::HELD_BYTES);
        let state = SkillState {
            wasi: wasi.build(),
            table,
            http,
            egress,
            limiter: MemoryLimiter { cap: self.limits.memory_bytes(), used: 0, hit: false },
            host,
            cpu_ticks: 0,
            cpu_exhausted: false,
            secret_checks: 0,
            stderr,
            files_room,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_max_component_handles(handles);
        let budget = self.limits.cpu_ms.div_ceil(TICK.as_millis() as u64).max(1);
        // Yield to tokio at every tick so a spinning guest never starves
        // the runtime, and count the ticks the guest has been running.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let s = ctx.data_mut();
            s.cpu_ticks += 1;
            if s.cpu_ticks > budget {
                s.cpu_exhausted = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Yield(1))
        });
        Ok(store)
    }

    /// Why a trap is a limit on what a call holds in the host, if it is: a
    /// full handle table (ours of host resources, or wasmtime's store-wide
    /// count of live component handles) or an oversized header map.
    fn host_memory(&self, e: &wasmtime::Error) -> Option<String> {
        let text = format!("{e:#}");
        if text.contains("resource table has no free keys") || text.contains("store handle limit exceeded") {
            let n = self.limits.handles;
            return Some(format!("more than {n} handles at once ([limits] handles)"));
        }
        let kib = crate::egress::HELD_BYTES >> 10;
        text.contains("total size of fields exceeds limit")
            .then(|| format!("HTTP headers over {kib} KiB in one header map (the most one may hold)"))
    }

    /// Run `call` on a fresh store under every limit and classify failure.
    pub async fn guarded<R>(
        &self,
        store: &mut Store<SkillState>,
        call: impl for<'a> FnOnce(&'a mut Store<SkillState>) -> GuestCall<'a, R>,
    ) -> Result<R, CallError> {
        let timeout = self.limits.timeout();
        let _flight = Flight::start(&self.ticker);
        let outcome = tokio::time::timeout(timeout, call(store)).await;
        let state = store.data();
        match outcome {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) if state.cpu_exhausted => Err(CallError::Cpu(self.limits.cpu_ms)),
            Ok(Err(_)) if state.limiter.hit => Err(CallError::Memory(self.limits.memory_mb)),
            Ok(Err(e)) if let Some(why) = self.host_memory(&e) => Err(CallError::HostMemory(why)),
            Ok(Err(e)) => {
                let stderr = String::from_utf8_lossy(&state.stderr.contents()).trim().to_string();
                let mut msg = format!("{e:#}");
                if !stderr.is_empty() {
                    msg.push_str("\nstderr: ");
                    msg.push_str(crate::text::tail(&stderr, 2000));
                }
                Err(CallError::Trap(msg))
            }
        }
    }
}
