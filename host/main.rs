//! The `wasiclaw` command line. Each command becomes an `api::Request`:
//! sent to the daemon when one runs (it owns the database), run in-process
//! otherwise. Output is rendered here; `--json` prints machine-readable data.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use wasiclaw::agent::{Agent, Event};
use wasiclaw::api::{self, Reply, Request};
use wasiclaw::channels::ChannelStatus;
use wasiclaw::config::{Paths, ProviderConfig, ProviderKind};
use wasiclaw::grants::{self, GrantChange, GrantSet, parse_granted_rule};
use wasiclaw::jobs::{Action, Job, Missed, NewJob, Run, When};
use wasiclaw::memory::{Hit, Memory};
use wasiclaw::pairing::Pairing;
use wasiclaw::queue::Notification;
use wasiclaw::queue::OutboxItem;
use wasiclaw::runtime::{Runtime, RuntimeError, SkillInfo, ToolOutcome};
use wasiclaw::secrets::Secrets;
use wasiclaw::session::Totals;
use wasiclaw::store::{AuditRecord, StoreError};
use wasiclaw::text::{one_line, printable};

#[derive(Parser)]
#[command(
    name = "wasiclaw",
    version,
    about = "An always-on personal AI agent whose skills are sandboxed WebAssembly components",
    long_about = "An always-on personal AI agent whose skills are sandboxed WebAssembly components.\n\n\
        Drop a skill (a .wasm component) into <state-dir>/skills/; it loads at once and asks for what it \
        needs. Nothing is allowed until you grant it: see `wasiclaw skills inspect NAME`, then \
        `wasiclaw skills grant NAME ...`. Every command works the same whether or not `wasiclaw run` is running.",
    after_help = "Getting started:\n  wasiclaw run                              # the daemon (keep it running)\n  \
        cp notes.wasm ~/.local/share/wasiclaw/skills/\n  wasiclaw skills list\n  \
        wasiclaw skills grant notes --all-requested  # or `skills approve NAME` for one that asks for nothing\n  \
        wasiclaw tool notes.add '{\"text\":\"buy milk\"}'\n  \
        wasiclaw open                             # the web chat's address, with its token\n  \
        wasiclaw doctor                           # when something does not work"
)]
struct Cli {
    /// Where the database, skills, secrets and config live.
    #[arg(long, global = true, env = "WASICLAW_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the always-on daemon: skills folder, local API, web chat (http://127.0.0.1:8787/).
    Run {
        #[command(flatten)]
        model: ModelArgs,
        /// Serve the gateway (web chat) here instead of [gateway] bind; port 0 picks a free one.
        #[arg(long, env = "WASICLAW_GATEWAY_BIND", value_name = "IP:PORT")]
        gateway_bind: Option<String>,
    },
    /// Check the setup (state dir, config, secrets, clock, disk, database, skills, channels,
    /// the model) and say for each problem what to run. Exits non-zero if anything needs you.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Print the web chat's address with its token. Only a user who can read the state
    /// directory can get it; opening it once sets a cookie, so bookmark the plain address.
    Open,
    /// Chat with the agent in the terminal (through the daemon when it runs).
    Chat {
        /// A named conversation; each keeps its own history.
        #[arg(long, default_value = "default")]
        session: String,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Scheduled work: prompts or tool calls on a cron, interval or one-shot schedule.
    #[command(subcommand)]
    Cron(CronCommand),
    /// Long-term memory: what the agent remembers across sessions.
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// Tokens and cost per day.
    Usage {
        #[arg(long, default_value_t = 14)]
        days: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show whether a daemon is running, what it holds, and how each chat channel is doing.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List, inspect and approve skills.
    #[command(subcommand)]
    Skills(SkillsCommand),
    /// Store secrets that the host injects into a skill's requests (values never reach skills).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Call a skill's tool directly, without a model: `wasiclaw tool notes.add '{"text":"hi"}'`.
    Tool {
        /// SKILL.TOOL, e.g. clock.now
        target: String,
        /// Arguments as a JSON object.
        #[arg(default_value = "{}")]
        args: String,
        /// Print the full outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the audit log: every capability use, allowed or denied.
    Audit {
        /// Only this skill.
        #[arg(long)]
        skill: Option<String>,
        /// How many of the newest records.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Who may talk to the agent through chat channels.
    #[command(subcommand)]
    Pairing(PairingCommand),
    /// Tool calls that wait for your word, and the tools you said "always" to.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Messages waiting to be sent through chat channels (retried until they go).
    Outbox {
        /// Give up on the queued message with this id (say, to a chat that no longer exists).
        #[arg(long, value_name = "ID")]
        drop: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Show messages skills sent to you with `notify`.
    Notifications {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

/// A model endpoint given on the command line or in the environment; it is
/// tried before the `[[providers]]` of config.toml.
#[derive(Args)]
struct ModelArgs {
    /// API family: openai (also OpenRouter, Ollama, llama.cpp, vLLM, LM Studio) or anthropic.
    #[arg(long, env = "WASICLAW_PROVIDER", default_value = "openai", value_parser = ["openai", "anthropic"])]
    provider: String,
    /// e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1
    #[arg(long, env = "WASICLAW_BASE_URL", requires = "model")]
    base_url: Option<String>,
    #[arg(long, env = "WASICLAW_MODEL", requires = "base_url")]
    model: Option<String>,
    /// Name of the secret holding the API key (`wasiclaw secrets set NAME`).
    #[arg(long, env = "WASICLAW_API_KEY_SECRET")]
    api_key_secret: Option<String>,
}

impl ModelArgs {
    fn provider(self) -> Option<ProviderConfig> {
        let kind = if self.provider == "anthropic" { ProviderKind::Anthropic } else { ProviderKind::Openai };
        Some(ProviderConfig {
            kind,
            base_url: self.base_url?,
            model: self.model?,
            api_key_secret: self.api_key_secret,
            price_input_per_mtok: 0.0,
            price_output_per_mtok: 0.0,
            timeout_s: 120,
        })
    }
}

#[derive(Subcommand)]
enum SkillsCommand {
    /// Every skill in the skills folder with its status and rights.
    List {
        /// One JSON object per line, per skill.
        #[arg(long)]
        json: bool,
    },
    /// A skill's tools, their JSON schemas, what it asks for and what it was granted.
    Inspect {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Grant rights. Effective rights are what the skill asks for AND what you grant.
    #[command(after_help = "Examples:\n  wasiclaw skills grant notes --kv\n  \
        wasiclaw skills grant web-fetch --http https://en.wikipedia.org/\n  \
        wasiclaw skills grant weather --http https://api.open-meteo.com/v1/,GET\n  \
        wasiclaw skills grant telegram --http https://api.telegram.org/ --secret TELEGRAM_TOKEN\n  \
        wasiclaw skills grant notes --all-requested")]
    Grant {
        name: String,
        #[command(flatten)]
        rights: Rights,
        /// Grant everything the skill asks for.
        #[arg(long)]
        all_requested: bool,
    },
    /// Approve this build of a component: a new or changed build runs, reaches the model or
    /// starts as a channel only after this (or a grant). Keeps the rights its previous version also
    /// asked for; anything new still needs `grant`.
    #[command(
        after_help = "A changed build shows as `needs-approval (changed: OLD → NEW)` in `wasiclaw skills list`\n\
        and carries no rights, kv, files or channel state until you approve it:\n  \
        wasiclaw skills approve telegram\n\
        To let future builds of one component keep their rights without asking (e.g. one you build\n\
        yourself), add --carry-over; --no-carry-over asks again."
    )]
    Approve {
        name: String,
        /// Future changed builds keep the rights their previous version also asked for.
        #[arg(long, conflicts_with = "no_carry_over")]
        carry_over: bool,
        /// Ask again for every changed build (the default).
        #[arg(long)]
        no_carry_over: bool,
    },
    /// Take rights back.
    Revoke {
        name: String,
        #[command(flatten)]
        rights: Rights,
        /// Revoke every grant of this skill.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args)]
struct Rights {
    /// HTTP access: URL prefix (scheme, host, optional port, path), optionally followed by
    /// comma-separated methods (default: any method the skill asks for).
    #[arg(long, value_name = "URL[,METHODS]")]
    http: Vec<String>,
    /// A secret the host may inject into this skill's requests or use for its HMACs.
    #[arg(long, value_name = "NAME")]
    secret: Vec<String>,
    #[command(flatten)]
    flags: RightFlags,
}

/// One `--NAME` switch per right of `grants::Rights::ALL`.
#[derive(Clone, Default)]
struct RightFlags(grants::Rights);

impl clap::FromArgMatches for RightFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let held = grants::Rights::ALL.into_iter().filter(|(_, name, _)| m.get_flag(name));
        Ok(RightFlags(held.fold(grants::Rights::default(), |set, (right, ..)| set | right)))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for RightFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        grants::Rights::ALL.into_iter().fold(cmd, |cmd, (_, name, help)| {
            cmd.arg(clap::Arg::new(name).long(name).action(clap::ArgAction::SetTrue).help(format!("{help}.")))
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum CronCommand {
    /// Add a job. WHEN is `every 10m` (s, m, h, d), `at 2026-12-01T08:00`, or a cron expression.
    #[command(after_help = "Examples:\n  \
        wasiclaw cron add '0 8 * * mon-fri' --tz Europe/Berlin --prompt 'Send me the weather for Berlin'\n  \
        wasiclaw cron add 'every 15m' --check mail.any-new --prompt 'Summarize my new mail'\n  \
        wasiclaw cron add 'at 2026-12-24T09:00' --prompt 'Remind me to call grandma'\n  \
        wasiclaw cron add 'every 1h' --tool notes.list")]
    Add {
        when: String,
        /// What the agent should do.
        #[arg(long, conflicts_with = "tool")]
        prompt: Option<String>,
        /// SKILL.TOOL to call directly instead (no model).
        #[arg(long)]
        tool: Option<String>,
        /// JSON arguments for --tool.
        #[arg(long)]
        args: Option<String>,
        /// Time zone for cron expressions and local `at` times (default: this machine's).
        #[arg(long)]
        tz: Option<String>,
        /// The chat that gets the result.
        #[arg(long, default_value = "terminal:default")]
        chat: String,
        /// A cheap SKILL.TOOL that runs first; the model wakes only if it reports something.
        #[arg(long)]
        check: Option<String>,
        #[arg(long)]
        check_args: Option<String>,
        /// After downtime: skip missed fires, or run once (default: run-once for `at`, skip otherwise).
        #[arg(long, value_parser = ["skip", "run-once"])]
        missed: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Jobs and their next fire times.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a job.
    Rm { id: u64 },
    /// Run a job now (an extra run; its schedule is unchanged otherwise).
    RunNow { id: u64 },
    /// Past runs, newest first.
    History {
        id: Option<u64>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MemoryCommand {
    /// Remember something: `wasiclaw memory add "Ada prefers tea" --tag people`.
    Add {
        #[arg(required = true)]
        text: Vec<String>,
        #[arg(long)]
        tag: Vec<String>,
        /// Always keep it in the model's context.
        #[arg(long)]
        pin: bool,
    },
    /// Search by keywords (and meaning, with embeddings configured).
    Search {
        #[arg(required = true)]
        query: Vec<String>,
        #[arg(long, default_value_t = 5)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Every memory, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a memory by id.
    Forget {
        id: u64,
    },
    /// Keep a memory in the model's context always.
    Pin {
        id: u64,
    },
    Unpin {
        id: u64,
    },
    /// Write all memories as JSON Lines (to FILE, or stdout).
    Export {
        file: Option<PathBuf>,
    },
    /// Read memories from JSON Lines (FILE, or `-` for stdin); ids already present are skipped.
    Import {
        file: PathBuf,
    },
}

#[derive(Subcommand)]
#[command(after_help = "An unknown sender who writes to a channel gets a pairing code and is otherwise ignored:\n\
    their messages are neither answered nor stored. Approve them with the code they show you:\n  \
    wasiclaw pairing approve K7M2QX9P\n\
    The first sender you approve becomes an admin, who can approve others from chat with `/approve CODE`.\n\
    In a group chat the bot answers only messages that mention it or reply to it, and a sender is\n\
    paired for that group only (`[channels.NAME] groups = \"mentioned\" | \"all\" | \"off\"`).\n\
    Senders listed in `[channels.NAME] allow = [\"ID\"]` in config.toml are served without pairing.")]
enum PairingCommand {
    /// Paired senders and pending requests.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Approve the sender who was given CODE.
    Approve {
        code: String,
        /// Let them approve others from their chat with `/approve CODE`.
        #[arg(long)]
        admin: bool,
    },
    /// Forget a sender (paired or pending): `wasiclaw pairing revoke telegram 12345`.
    Revoke {
        channel: String,
        sender: String,
        /// The group chat of a pairing made there (`pairing list` shows it).
        #[arg(long, value_name = "CHAT")]
        group: Option<String>,
    },
    /// Set what a paired non-admin may use. By default they get their own session and
    /// read-only tools, and no memory, `/tool` or anything that writes, sends or spends.
    #[command(after_help = "Examples:\n  wasiclaw pairing grant telegram 12345 --memory\n  \
        wasiclaw pairing grant telegram 12345 --tools write\n  wasiclaw pairing grant telegram 12345   # back to the defaults")]
    Grant {
        channel: String,
        sender: String,
        /// The group chat of a pairing made there (`pairing list` shows it).
        #[arg(long, value_name = "CHAT")]
        group: Option<String>,
        /// Your long-term memory: recall, search and save.
        #[arg(long)]
        memory: bool,
        /// The riskiest tools they may cause: read, write, send or spend.
        #[arg(long, value_name = "RISK", value_parser = parse_risk)]
        tools: Option<wasiclaw::approvals::Risk>,
        /// `/tool SKILL.TOOL {json}` in their chat.
        #[arg(long)]
        direct_tools: bool,
    },
}

fn parse_risk(s: &str) -> Result<wasiclaw::approvals::Risk, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("`{s}` is not a risk: use read, write, send or spend"))
}

fn parse_answer(s: &str) -> Result<wasiclaw::approvals::Answer, String> {
    wasiclaw::approvals::Answer::parse(s).ok_or_else(|| format!("`{s}` is not an answer: use allow, always or deny"))
}

#[derive(Subcommand)]
#[command(after_help = "Each tool has a risk: read, write, send or spend (a skill declares it; raise it with\n\
    [tools.\"SKILL.TOOL\"] risk = \"send\" in config.toml). Tools set to ask (policy = \"ask\"; send and spend by\n\
    default), and any tool above read once the conversation holds untrusted content, wait for your answer\n\
    in the chat you are using: /allow ID, /always ID or /deny ID.")]
enum ApprovalsCommand {
    /// Tools you answered "always" for.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Ask again before TOOL runs (e.g. `notes.add`).
    Revoke { tool: String },
    /// Answer a waiting tool call: allow, always or deny.
    Answer {
        id: u64,
        #[arg(value_parser = parse_answer)]
        answer: wasiclaw::approvals::Answer,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Store a secret; the value is read from stdin (or a hidden prompt), never from arguments.
    Set { name: String },
    /// Secret names (never values).
    List,
    /// Delete a secret.
    Rm { name: String },
}

impl Rights {
    fn change(self, all: bool) -> anyhow::Result<GrantChange> {
        let http = self.http.iter().map(|s| parse_granted_rule(s)).collect::<Result<Vec<_>, _>>()?;
        let rights = GrantSet { http, secrets: self.secret.into_iter().collect(), rights: self.flags.0 };
        Ok(GrantChange { rights, all, carry_over: None })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_daemon = matches!(cli.command, Command::Run { .. });
    let filter = std::env::var("WASICLAW_LOG")
        .unwrap_or_else(|_| if is_daemon { "info" } else { "warn,wasiclaw::engine=info" }.into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = Paths::new(cli.state_dir.unwrap_or_else(Paths::default_state_dir));
    let (request, json) = match cli.command {
        Command::Run { model, gateway_bind } => {
            return wasiclaw::daemon::run(paths, model.provider(), gateway_bind).await.map(|_| ExitCode::SUCCESS);
        }
        Command::Doctor { json } => {
            let findings = wasiclaw::doctor::run(&paths).await;
            for f in &findings {
                if json {
                    println!("{}", serde_json::to_string(f)?);
                } else if f.ok {
                    println!("ok       {:<9} {}", f.check, f.said);
                } else {
                    println!("PROBLEM  {:<9} {}\n         → {}", f.check, f.said, f.fix.as_deref().unwrap_or_default());
                }
            }
            let problems = findings.iter().filter(|f| !f.ok).count();
            if !json {
                println!("{}", if problems == 0 { "all good".to_string() } else { format!("{problems} problem(s)") });
            }
            return Ok(if problems == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Open => {
            std::fs::create_dir_all(&paths.state_dir)
                .with_context(|| format!("cannot create {}", paths.state_dir.display()))?;
            let config = wasiclaw::config::Config::load(&paths.config())?;
            println!("{}", wasiclaw::gateway::open_url(&config, &Secrets::new(paths.secrets()))?);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Chat { session, model } => return chat(paths, &session, model.provider()).await,
        Command::Usage { days, json } => (Request::Usage { days }, json),
        Command::Cron(cmd) => match cmd {
            CronCommand::Add { when, prompt, tool, args, tz, chat, check, check_args, missed, name } => {
                let tz = tz.unwrap_or_else(|| jiff::tz::TimeZone::system().iana_name().unwrap_or("UTC").to_string());
                let missed = missed.map(|m| if m == "skip" { Missed::Skip } else { Missed::RunOnce });
                let job = NewJob { when, tz, prompt, tool, args, chat, check, check_args, missed, name };
                (Request::CronAdd { job }, false)
            }
            CronCommand::List { json } => (Request::CronList, json),
            CronCommand::Rm { id } => (Request::CronRm { id }, false),
            CronCommand::RunNow { id } => (Request::CronRunNow { id }, false),
            CronCommand::History { id, limit, json } => (Request::CronHistory { id, limit }, json),
        },
        Command::Memory(cmd) => match cmd {
            MemoryCommand::Add { text, tag, pin } => {
                (Request::MemoryAdd { text: text.join(" "), tags: tag, pinned: pin }, false)
            }
            MemoryCommand::Search { query, limit, json } => {
                (Request::MemorySearch { query: query.join(" "), limit }, json)
            }
            MemoryCommand::List { json } => (Request::MemoryList, json),
            MemoryCommand::Forget { id } => (Request::MemoryForget { id }, false),
            MemoryCommand::Pin { id } => (Request::MemoryPin { id, pinned: true }, false),
            MemoryCommand::Unpin { id } => (Request::MemoryPin { id, pinned: false }, false),
            MemoryCommand::Export { file } => {
                let Reply::Ok(v) = execute(paths, &Request::MemoryExport).await? else { bail!("export failed") };
                let jsonl = v.as_str().unwrap_or_default();
                match file {
                    Some(f) => std::fs::write(&f, jsonl).with_context(|| format!("cannot write {}", f.display()))?,
                    None => print!("{jsonl}"),
                }
                return Ok(ExitCode::SUCCESS);
            }
            MemoryCommand::Import { file } => {
                let jsonl = if file.as_os_str() == "-" {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                } else {
                    std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?
                };
                (Request::MemoryImport { jsonl }, false)
            }
        },
        Command::Secrets(cmd) => return secrets(&paths, cmd),
        Command::Status { json } => (Request::Status, json),
        Command::Skills(SkillsCommand::List { json }) => (Request::SkillsList, json),
        Command::Skills(SkillsCommand::Inspect { name, json }) => (Request::SkillsInspect { name }, json),
        Command::Skills(SkillsCommand::Grant { name, rights, all_requested }) => {
            let change = rights.change(all_requested)?;
            if change == GrantChange::default() {
                bail!(
                    "nothing to grant: name rights (--http, --secret, --kv, ...) or --all-requested; see `wasiclaw skills inspect {name}`"
                );
            }
            (Request::Grant { name, change }, false)
        }
        Command::Skills(SkillsCommand::Approve { name, carry_over, no_carry_over }) => {
            let carry_over = (carry_over || no_carry_over).then_some(carry_over);
            (Request::Grant { name, change: GrantChange { carry_over, ..Default::default() } }, false)
        }
        Command::Skills(SkillsCommand::Revoke { name, rights, all }) => {
            let change = rights.change(all)?;
            if change == GrantChange::default() {
                bail!("nothing to revoke: name rights (--http URL, --secret, --kv, ...) or --all");
            }
            (Request::Revoke { name, change }, false)
        }
        Command::Tool { target, args, json } => {
            let Some((skill, tool)) = target.split_once('.') else {
                bail!("`{target}` is not SKILL.TOOL, e.g. `clock.now`; `wasiclaw skills inspect SKILL` lists tools");
            };
            (Request::Tool { skill: skill.into(), tool: tool.into(), args }, json)
        }
        Command::Audit { skill, limit, json } => (Request::Audit { skill, limit }, json),
        Command::Notifications { limit, json } => (Request::Notifications { limit }, json),
        Command::Pairing(PairingCommand::List { json }) => (Request::PairingList, json),
        Command::Pairing(PairingCommand::Approve { code, admin }) => (Request::PairingApprove { code, admin }, false),
        Command::Pairing(PairingCommand::Revoke { channel, sender, group }) => {
            let sender = wasiclaw::pairing::key(&sender, group.as_deref());
            (Request::PairingRevoke { channel, sender }, false)
        }
        Command::Pairing(PairingCommand::Grant { channel, sender, group, memory, tools, direct_tools }) => {
            let sender = wasiclaw::pairing::key(&sender, group.as_deref());
            let scope = wasiclaw::pairing::Scope { memory, max_risk: tools, direct_tools };
            (Request::PairingGrant { channel, sender, scope }, false)
        }
        Command::Approvals(ApprovalsCommand::List { json }) => (Request::ApprovalsList, json),
        Command::Approvals(ApprovalsCommand::Revoke { tool }) => (Request::ApprovalsRevoke { tool }, false),
        Command::Approvals(ApprovalsCommand::Answer { id, answer }) => (Request::Answer { id, answer }, false),
        Command::Outbox { drop: Some(id), .. } => (Request::OutboxDrop { id }, false),
        Command::Outbox { drop: None, json } => (Request::Outbox, json),
    };
    let reply = execute(paths, &request).await?;
    let value = match reply {
        Reply::Ok(v) => v,
        Reply::Err(e) => bail!(e),
        Reply::Event(_) => bail!("the daemon sent an event where a reply was due"),
    };
    render(&request, value, json)
}

/// Send the request to the daemon, or run it here if none is running. If
/// the database is busy (a daemon starting up), ask again until it answers.
async fn execute(paths: Paths, request: &Request) -> anyhow::Result<Reply> {
    let start = std::time::Instant::now();
    loop {
        if let Some(reply) = api::call_daemon(&paths.socket(), request, &mut |_| {}).await? {
            return Ok(reply);
        }
        match Runtime::open(paths.clone()) {
            Ok(rt) => {
                if request.needs_skills() {
                    rt.rescan().await;
                }
                let rt = Arc::new(rt);
                let agent = if request.needs_agent() { Some(Agent::new(rt.clone(), None).await) } else { None };
                return Ok(api::dispatch(&rt, agent.as_ref(), None, request.clone(), &|_| {}).await);
            }
            Err(RuntimeError::Store(StoreError::Locked(_))) if start.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The terminal chat: one line in, a streamed reply out.
async fn chat(paths: Paths, session: &str, provider: Option<ProviderConfig>) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::AsyncBufReadExt;
    let key = format!("terminal:{session}");
    let daemon = api::call_daemon(&paths.socket(), &Request::Status, &mut |_| {}).await?.is_some();
    let agent = if daemon {
        if provider.is_some() {
            eprintln!("note: the running daemon uses its own model settings; --model/--base-url are ignored");
        }
        None
    } else {
        let rt = Arc::new(Runtime::open_patiently(paths.clone(), Duration::from_secs(15)).await?);
        rt.rescan().await;
        Some(Agent::new(rt, provider).await)
    };
    let tty = std::io::stdin().is_terminal();
    if tty {
        println!(
            "wasiclaw chat ({}) — /help for commands, Ctrl-D to quit",
            if daemon { "via the daemon" } else { "local" }
        );
    }
    let streamed = AtomicBool::new(false);
    // The id of the tool call waiting for an answer typed during the turn.
    let waiting = std::sync::atomic::AtomicU64::new(0);
    let show = |e: Event| {
        let mut out = std::io::stdout().lock();
        let _ = match e {
            Event::Text { text } => {
                streamed.store(true, Ordering::Relaxed);
                write!(out, "{text}")
            }
            Event::ToolCall { name, arguments } => writeln!(out, "\n  ⚙ {name} {}", one_line(&arguments)),
            Event::ToolResult { name, ok, preview } => {
                writeln!(out, "  ↳ {name} {}: {}", if ok { "ok" } else { "error" }, one_line(&preview))
            }
            Event::Notice { text } => writeln!(out, "  ({text})"),
            Event::Approval { id, tool, arguments, reason } => {
                waiting.store(id, Ordering::Relaxed);
                writeln!(
                    out,
                    "\n  ? allow {tool} {}\n    ({reason})\n    y = once, a = always, n = deny: ",
                    one_line(&arguments)
                )
            }
        };
        let _ = out.flush();
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    // Lines typed while a turn runs that are not answers wait their turn.
    let mut typed: std::collections::VecDeque<String> = Default::default();
    let mut stdin_open = true;
    loop {
        if tty {
            print!("› ");
            std::io::stdout().flush()?;
        }
        let line = match typed.pop_front() {
            Some(line) => line,
            None if !stdin_open => break,
            None => match lines.next_line().await? {
                Some(line) => line,
                None => break,
            },
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if text == "/quit" || text == "/exit" {
            break;
        }
        streamed.store(false, Ordering::Relaxed);
        let request = Request::Chat { session: key.clone(), text: text.to_string() };
        let turn = async {
            anyhow::Ok(match &agent {
                Some(agent) => api::dispatch(&agent.rt, Some(agent), None, request, &show).await,
                None => api::call_daemon(&paths.socket(), &request, &mut |e| show(e))
                    .await?
                    .context("the daemon stopped")?,
            })
        };
        tokio::pin!(turn);
        let reply = loop {
            tokio::select! {
                reply = &mut turn => break reply?,
                line = lines.next_line(), if stdin_open => match line? {
                    None => stdin_open = false,
                    Some(line) => {
                        let id = waiting.load(Ordering::Relaxed);
                        match wasiclaw::approvals::Answer::parse(line.trim()) {
                            Some(answer) if id != 0 => {
                                waiting.store(0, Ordering::Relaxed);
                                let request = Request::Answer { id, answer };
                                match &agent {
                                    Some(agent) => {
                                        agent.rt.questions.answer(id, answer);
                                    }
                                    None => {
                                        api::call_daemon(&paths.socket(), &request, &mut |_| {}).await?;
                                    }
                                }
                            }
                            _ => typed.push_back(line),
                        }
                    }
                },
            }
        };
        match reply {
            Reply::Ok(v) if !streamed.load(Ordering::Relaxed) => {
                println!("{}", v["reply"].as_str().unwrap_or_default())
            }
            Reply::Ok(_) => println!(),
            Reply::Err(e) => eprintln!("error: {e}"),
            Reply::Event(_) => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn secrets(paths: &Paths, cmd: SecretsCommand) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("cannot create {}", paths.state_dir.display()))?;
    let store = Secrets::new(paths.secrets());
    match cmd {
        SecretsCommand::Set { name } => {
            let value = if std::io::stdin().is_terminal() {
                rpassword::prompt_password(format!("value for {name} (input hidden): "))?
            } else {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s.trim_end_matches(['\n', '\r']).to_string()
            };
            store.set(&name, &value)?;
            eprintln!("stored secret {name} in {}", paths.secrets().display());
        }
        SecretsCommand::List => {
            for name in store.names()? {
                println!("{name}");
            }
        }
        SecretsCommand::Rm { name } => {
            store.remove(&name)?;
            eprintln!("removed secret {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn render(request: &Request, value: Value, json: bool) -> anyhow::Result<ExitCode> {
    match request {
        Request::SkillsList if json => {
            for skill in value.as_array().into_iter().flatten() {
                println!("{skill}");
            }
        }
        Request::SkillsList => {
            let skills: Vec<SkillInfo> = serde_json::from_value(value)?;
            if skills.is_empty() {
                println!("no skills yet: copy a .wasm skill into the skills folder (see `wasiclaw status`)");
            }
            for s in &skills {
                let status = match &s.changed {
                    Some(change) => format!("{} (changed: {change})", s.status),
                    None => s.status.clone(),
                };
                println!(
                    "{:<16} {:<8} {:<9} {:<15} {}  {}",
                    s.name,
                    if s.channel.is_some() { "channel" } else { "skill" },
                    printable(s.version.as_deref().unwrap_or("-")),
                    status,
                    &s.sha256[..12.min(s.sha256.len())],
                    summary(s)
                );
            }
        }
        Request::SkillsInspect { .. } if !json => print_inspect(&serde_json::from_value(value)?),
        Request::Grant { .. } | Request::Revoke { .. } if !json => {
            for note in value["notes"].as_array().into_iter().flatten() {
                eprintln!("note: {}", note.as_str().unwrap_or_default());
            }
            let info: SkillInfo = serde_json::from_value(value["skill"].clone())?;
            println!("{}: {}  {}", info.name, info.status, summary(&info));
        }
        Request::Tool { .. } => {
            let outcome: ToolOutcome = serde_json::from_value(value.clone())?;
            if json {
                println!("{value}");
            } else if outcome.ok {
                println!("{}", printable(&outcome.output));
            } else {
                let kind = outcome.error_kind.as_deref().unwrap_or("error");
                eprintln!("error ({kind}): {}", printable(&outcome.output));
            }
            if !json {
                for d in &outcome.denials {
                    eprintln!("host denied {}", one_line(d));
                }
            }
            return Ok(if outcome.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Request::Audit { .. } if !json => {
            let records: Vec<AuditRecord> = serde_json::from_value(value)?;
            for r in records {
                let time = jiff::Timestamp::from_millisecond(r.time_ms).map(|t| t.to_string()).unwrap_or_default();
                let verdict = if r.allowed { "allowed" } else { "DENIED " };
                let detail = if r.detail.is_empty() { String::new() } else { format!("  ({})", r.detail) };
                let (target, detail) = (one_line(&r.target), one_line(&detail));
                println!("{time}  {verdict} {:<12} {:<7} {target}{detail}", r.skill, r.capability);
            }
        }
        Request::Notifications { .. } if !json => {
            let list: Vec<Notification> = serde_json::from_value(value)?;
            for n in list {
                let time = jiff::Timestamp::from_millisecond(n.time_ms).map(|t| t.to_string()).unwrap_or_default();
                println!("{time}  {}: {}", n.skill, one_line(&n.text));
            }
        }
        Request::Usage { .. } if !json => {
            let days: Vec<(String, Totals)> = serde_json::from_value(value)?;
            if days.is_empty() {
                println!("no model use recorded yet");
            }
            println!("{:<12} {:>10} {:>10} {:>10} {:>6}", "day (UTC)", "input", "output", "cost $", "calls");
            for (day, t) in days {
                println!("{day:<12} {:>10} {:>10} {:>10.4} {:>6}", t.input, t.output, t.cost, t.calls);
            }
        }
        Request::MemoryAdd { .. } => println!("remembered as {}", value["id"]),
        Request::CronAdd { .. } => {
            let job: Job = serde_json::from_value(value)?;
            println!(
                "added job {}: {}; next run {}",
                job.id,
                job.when.describe(),
                time_of(job.next_ms, Some(&job.when))
            );
        }
        Request::CronList if !json => {
            for j in serde_json::from_value::<Vec<Job>>(value)? {
                let what = match &j.action {
                    Action::Prompt { text } => format!("prompt {text:?}"),
                    Action::Tool { skill, tool, args } => format!("tool {skill}.{tool} {args}"),
                };
                let check = j.check.as_ref().map(|c| format!(" if {}.{}", c.skill, c.tool)).unwrap_or_default();
                let next = time_of(j.next_ms, Some(&j.when));
                println!("{:>4}  next {next}  {}  {what}{check} → {}", j.id, j.when.describe(), j.target);
            }
        }
        Request::CronRm { id } => println!("removed job {id}"),
        Request::CronRunNow { .. } | Request::CronHistory { .. } if !json => {
            let runs: Vec<Run> = match value {
                Value::Array(_) => serde_json::from_value(value)?,
                Value::Null => vec![],
                one => vec![serde_json::from_value(one)?],
            };
            for r in runs {
                let tokens = if r.tokens == 0 { "0 tokens".to_string() } else { format!("{} tokens", r.tokens) };
                println!(
                    "job {:>3}  {}  {:<11} {tokens:<12} {}",
                    r.job,
                    time_of(Some(r.fire_ms), None),
                    r.status,
                    one_line(&r.output)
                );
            }
        }
        Request::MemorySearch { .. } if !json => {
            let hits: Vec<Hit> = serde_json::from_value(value)?;
            if hits.is_empty() {
                println!("nothing found");
            }
            for h in hits {
                println!("{}", printable(&memory_line(&h.memory)));
            }
        }
        Request::MemoryList if !json => {
            for m in serde_json::from_value::<Vec<Memory>>(value)? {
                println!("{}", printable(&memory_line(&m)));
            }
        }
        Request::MemoryForget { id } => println!("forgot {id}"),
        Request::MemoryPin { id, pinned } => println!("{} {id}", if *pinned { "pinned" } else { "unpinned" }),
        Request::MemoryImport { .. } => {
            println!("imported {}, skipped {} already present", value["imported"], value["skipped"])
        }
        Request::Status if !json => print_status(&value),
        Request::PairingList if !json => {
            let pairings: Vec<Pairing> = serde_json::from_value(value)?;
            if pairings.is_empty() {
                println!("nobody is paired yet; senders who write to a channel get a code to approve here");
            }
            for p in pairings {
                let state = match (&p.code, p.approved, p.admin) {
                    (_, true, true) => "paired (admin)".to_string(),
                    (_, true, false) => "paired".to_string(),
                    (Some(code), false, _) => format!("pending: wasiclaw pairing approve {code}"),
                    (None, false, _) => "pending".to_string(),
                };
                let (sender, name, chat) = (one_line(&p.sender_id), one_line(&p.sender_name), one_line(&p.chat_id));
                let chat =
                    if p.group { format!("in group {chat} only (--group {chat})") } else { format!("chat {chat}") };
                println!("{}:{sender}  {name}  {chat}  {state}", p.channel);
            }
        }
        Request::PairingApprove { .. } => {
            let p: Pairing = serde_json::from_value(value)?;
            println!(
                "approved {} ({}:{}){}",
                p.sender_name,
                p.channel,
                p.sender_id,
                if p.admin { " as an admin" } else { "" }
            );
        }
        Request::PairingRevoke { channel, sender } => println!("forgot {channel}:{sender}"),
        Request::PairingGrant { channel, sender, scope } => println!("{channel}:{sender} may now use: {scope:?}"),
        Request::Answer { id, .. } if value["answered"] != true => bail!("no tool call is waiting for answer {id}"),
        Request::Answer { .. } => println!("answered"),
        Request::ApprovalsList if !json => {
            let list: Vec<(String, i64)> = serde_json::from_value(value)?;
            if list.is_empty() {
                println!("no tool runs without asking beyond its policy");
            }
            for (tool, ms) in list {
                let since = jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default();
                println!("{tool:<30} always allowed since {since}  (revoke: wasiclaw approvals revoke {tool})");
            }
        }
        Request::ApprovalsRevoke { tool } => println!("{tool} will ask again"),
        Request::OutboxDrop { id } => println!("dropped queued message {id}; it will not be sent"),
        Request::Outbox if !json => {
            let items: Vec<OutboxItem> = serde_json::from_value(value)?;
            if items.is_empty() {
                println!("nothing waiting to be sent");
            }
            for o in items {
                let error = o.last_error.map(|e| format!("  last error: {}", one_line(&e))).unwrap_or_default();
                println!(
                    "{:>5}  {}:{}  {} attempt(s)  {}{error}",
                    o.id,
                    o.channel,
                    o.chat_id,
                    o.attempts,
                    one_line(&wasiclaw::text::truncate(&o.text, 60))
                );
            }
        }
        _ => println!("{}", serde_json::to_string_pretty(&value)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(value: &Value) {
    let mib = |v: &Value| format!("{:.1} MiB", v.as_u64().unwrap_or(0) as f64 / (1 << 20) as f64);
    let daemon = if value["daemon"].as_bool() == Some(true) {
        let up = value["uptime_s"].as_i64().unwrap_or(0);
        format!("daemon running (pid {}, up {}h{:02}m)", value["pid"], up / 3600, up / 60 % 60)
    } else {
        "no daemon running (start one with `wasiclaw run`)".into()
    };
    println!(
        "wasiclaw {}: {daemon}\nstate dir: {}",
        value["version"].as_str().unwrap_or("?"),
        value["state_dir"].as_str().unwrap_or_default()
    );
    let models: Vec<String> = serde_json::from_value(value["models"].clone()).unwrap_or_default();
    println!(
        "model: {}",
        if models.is_empty() {
            "none configured (a local Ollama is tried)".to_string()
        } else {
            models.join(", then ")
        }
    );
    let states: std::collections::BTreeMap<String, usize> =
        serde_json::from_value(value["components_by_state"].clone()).unwrap_or_default();
    let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!("skills and channels: {}", if states.is_empty() { "none".to_string() } else { states.join(", ") });
    let next = value["next_run_ms"].as_i64().map(|ms| time_of(Some(ms), None)).unwrap_or_else(|| "none".into());
    println!("jobs: {} (next run {next})", value["jobs"]);
    let budget = match value["daily_token_budget"].as_u64() {
        Some(0) | None => "no daily budget".to_string(),
        Some(b) => format!("of a {b} budget"),
    };
    println!("tokens today: {} {budget}", value["tokens_today"]);
    println!(
        "database: {}, compiled cache: {}, audit records: {}",
        mib(&value["database_bytes"]),
        mib(&value["cache_bytes"]),
        value["audit_records"]
    );
    let channels: Vec<ChannelStatus> = serde_json::from_value(value["channels"].clone()).unwrap_or_default();
    if channels.is_empty() {
        return;
    }
    println!("channels:");
    for c in channels {
        let mut line = format!("  {}: {} ({})", c.name, c.state, c.transport);
        line.push_str(&format!(", {} received, {} sent", c.received, c.sent));
        if c.outbox_pending > 0 {
            line.push_str(&format!(", {} waiting to send (`wasiclaw outbox`)", c.outbox_pending));
        }
        if c.restarts > 0 {
            line.push_str(&format!(", restarted {} time(s)", c.restarts));
        }
        println!("{line}");
        if let Some(e) = &c.last_error {
            println!("    last error: {}", printable(e));
        }
        if !c.pending_rights.is_empty() {
            println!("    not granted: {} (see `wasiclaw skills inspect {}`)", c.pending_rights.join("; "), c.name);
        }
    }
}

/// A time in the job's own zone (cron jobs) or this machine's.
fn time_of(ms: Option<i64>, when: Option<&When>) -> String {
    let tz = match when {
        Some(When::Cron { tz, .. }) => jiff::tz::TimeZone::get(tz).unwrap_or_else(|_| jiff::tz::TimeZone::system()),
        _ => jiff::tz::TimeZone::system(),
    };
    match ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()) {
        Some(t) => t.to_zoned(tz).strftime("%Y-%m-%d %H:%M %Z").to_string(),
        None => "never (done)".into(),
    }
}

fn memory_line(m: &Memory) -> String {
    let date =
        jiff::Timestamp::from_millisecond(m.created_ms).map(|t| t.strftime("%Y-%m-%d").to_string()).unwrap_or_default();
    let tags = if m.tags.is_empty() { String::new() } else { format!(" #{}", m.tags.join(" #")) };
    format!("{:>5}  {date}  {}{}{tags}  ({})", m.id, if m.pinned { "📌 " } else { "" }, m.text, m.source)
}

/// One line on what a skill may do or still asks for.
fn summary(s: &SkillInfo) -> String {
    if let Some(reason) = &s.reason {
        return format!("rejected: {reason}");
    }
    if s.pending.is_empty() {
        let granted = s.requested.as_ref().map(|r| r != &Default::default()).unwrap_or(false);
        return if granted { "all requested rights granted".into() } else { "needs no rights".into() };
    }
    format!("awaiting approval: {} (see `wasiclaw skills inspect {}`)", one_line(&s.pending.join("; ")), s.name)
}

fn print_inspect(s: &SkillInfo) {
    let (version, description) = (s.version.as_deref().unwrap_or("?"), s.description.as_deref().unwrap_or(""));
    println!("{} {} — {}", s.name, one_line(version), one_line(description));
    println!("file:   {}\nsha256: {}\nstatus: {}", s.file.display(), s.sha256, s.status);
    if let Some(change) = &s.changed {
        println!("changed: {change}; it carries nothing until you run `wasiclaw skills approve {}`", s.name);
    }
    if let Some((keys, bytes)) = s.kv_usage {
        println!("kv:     {keys} keys, {bytes} bytes");
    }
    if let Some(reason) = &s.reason {
        println!("reason: {reason}");
        return;
    }
    if let Some(c) = &s.channel {
        let transport = wasiclaw::channels::describe_transport(&s.name, &c.transport);
        println!("\na chat channel: {transport}; messages up to {} characters", c.max_length);
    }
    println!("\ntools:");
    for t in &s.tools {
        println!(
            "  {}.{} — {}\n    parameters: {}",
            s.name,
            t.name,
            one_line(&t.description),
            one_line(&t.parameters.to_string())
        );
    }
    let r = s.requested.clone().unwrap_or_default();
    println!("\nasks for:");
    let mut asks: Vec<String> = r
        .http
        .iter()
        .map(|h| {
            let headers = h.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ");
            let headers = if headers.is_empty() { String::new() } else { format!(" (sets {headers})") };
            format!("http {} {}{headers}", h.methods().join(","), h.url)
        })
        .collect();
    asks.extend(r.all_secrets().into_iter().map(|n| format!("secret {n}")));
    asks.extend(r.rights.names().map(String::from));
    if asks.is_empty() {
        println!("  nothing");
    }
    for a in asks {
        let pending = s.pending.iter().any(|p| a.starts_with(p.as_str()));
        println!("  {:<60} {}", a, if pending { "NOT GRANTED" } else { "granted" });
    }
    if !s.pending.is_empty() {
        println!("\nto approve everything it asks for: wasiclaw skills grant {} --all-requested", s.name);
    }
    if let Some(sha) = s.granted_sha256.as_ref().filter(|sha| **sha != s.sha256) {
        println!(
            "\nnote: grants were approved for an earlier version ({}); new requests need approval",
            &sha[..12.min(sha.len())]
        );
    }
}
