//! The integration tests: one binary, one module per feature. Guests are
//! built from skills-wasm/ once per run; every external service is a
//! loopback server started by the test.

// Helpers are `pub` to share them between the modules of this one binary.
#![allow(unreachable_pub)]

mod fake_llm;
mod support;

mod agent;
mod approvals;
mod bundled;
mod channels;
mod chat;
mod cli;
mod contract;
mod cron;
mod discord;
mod egress;
mod gateway;
mod grants;
mod groups;
mod hostile;
mod layers;
mod limits;
mod matrix;
mod memory;
mod properties;
mod python;
mod reload;
mod scheduler;
mod scripts;
mod secrets;
mod skills;
mod telegram;
mod templates;
mod webhooks;
