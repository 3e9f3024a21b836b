//! wasiclaw: an always-on personal AI agent whose skills are sandboxed WASI
//! components. The binary (`main.rs`) is a thin CLI over these modules.

pub mod agent;
pub mod api;
pub mod approvals;
pub mod budget;
pub mod channels;
pub mod component;
pub mod config;
pub mod context;
pub mod contract;
pub mod cron;
pub mod daemon;
pub mod doctor;
pub mod egress;
pub mod engine;
pub mod files;
pub mod gateway;
pub mod grants;
pub mod host_api;
pub mod jobs;
pub mod knowledge;
pub mod llm;
pub mod markup;
pub mod memory;
pub mod pairing;
pub mod policy;
pub mod queue;
pub mod redact;
pub mod runtime;
pub mod scheduler;
pub mod secrets;
pub mod session;
pub mod state;
pub mod store;
pub mod text;
pub mod tools;
