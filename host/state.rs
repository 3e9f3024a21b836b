//! The data of one call's store (`SkillState`): what the host-side imports
//! (`host_api.rs`), the WASI and HTTP views and the engine's limits read.
//! It has no behaviour of its own beyond the memory cap, so the sandbox
//! modules that use it (engine, contract, host_api) need not import each
//! other.

use crate::context::HostCtx;
use crate::egress::EgressHooks;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Caps linear memory and tables together: every memory and table of the
/// store draws on one budget, so tables cannot route around `memory_mb`.
pub struct MemoryLimiter {
    pub(crate) cap: usize,
    pub(crate) used: usize,
    /// The cap was hit in this call.
    pub hit: bool,
}

/// What one table element costs the host, at most (a function reference
/// and its type, on 64-bit hosts).
const TABLE_ELEMENT_BYTES: usize = 16;

impl MemoryLimiter {
    fn charge(&mut self, bytes: usize) -> bool {
        let grown = self.used.saturating_add(bytes);
        if grown > self.cap {
            self.hit = true;
            return false;
        }
        self.used = grown;
        true
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.charge(desired - current))
    }

    fn table_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.charge((desired - current).saturating_mul(TABLE_ELEMENT_BYTES)))
    }

    // Each instance, table and memory costs host bookkeeping besides its
    // contents; real components need a few dozen at most.
    fn instances(&self) -> usize {
        100
    }

    fn tables(&self) -> usize {
        100
    }

    fn memories(&self) -> usize {
        100
    }
}

/// What one call's store holds: WASI and HTTP contexts, the egress hooks,
/// the limiter, the call's host context and the CPU meter.
pub struct SkillState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    pub(crate) egress: EgressHooks,
    /// The memory cap.
    pub limiter: MemoryLimiter,
    /// The call's context: who, with what rights.
    pub host: HostCtx,
    pub(crate) cpu_ticks: u64,
    pub(crate) cpu_exhausted: bool,
    /// `secret-equals` checks made in this call.
    pub(crate) secret_checks: u32,
    pub(crate) stderr: MemoryOutputPipe,
    /// What the call may still write under `/data` (none: read-only or no files).
    pub(crate) files_room: Option<std::sync::Arc<crate::files::Room>>,
}

impl WasiView for SkillState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl crate::files::HasRoom for SkillState {
    fn room(&self) -> Option<&std::sync::Arc<crate::files::Room>> {
        self.files_room.as_ref()
    }
}

impl WasiHttpView for SkillState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.egress }
    }
}
