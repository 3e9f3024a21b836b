//! The command line's schema: every command, flag and its help (clap).
//! `main.rs` turns a parsed command into an `api::Request`.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use wasiclaw::api::Request;
use wasiclaw::config::{ProviderConfig, ProviderKind};
use wasiclaw::grants::{self, GrantChange, GrantSet, parse_granted_rule};
use wasiclaw::jobs::{Missed, NewJob};

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
        wasiclaw doctor                           # when something does not work\n\n\
        Exit status: 0 done, 1 failed, 2 invalid input, 3 not found, 4 refused (a rejected skill),\n\
        5 the database is held by another process (a starting daemon: retry)"
)]
pub(crate) struct Cli {
    /// Where the database, skills, secrets and config live.
    #[arg(long, global = true, env = "WASICLAW_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Log lines as text (no colours unless stderr is a terminal) or as JSON, one object per line.
    #[arg(long, global = true, env = "WASICLAW_LOG_FORMAT", value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub(crate) log_format: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Compile one component into the cache: the daemon runs its compiles
    /// as this child process, so the kernel can reclaim a compile's memory
    /// without taking the daemon.
    #[command(name = "__compile", hide = true)]
    Compile {
        file: PathBuf,
        /// The build expected: a file changed meanwhile is left alone.
        sha256: String,
    },
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
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon as a systemd service: restarted on failure, hardened, started at boot.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Start a new skill from a template that works: a script, or a Rust, Python or JavaScript
    /// component project.
    #[command(subcommand)]
    New(NewCommand),
    /// Print the web chat's address with its token. Only a user who can read the state
    /// directory can get it; opening it once sets a cookie, so bookmark the plain address.
    Open {
        /// Make a new token first: the old address, and every browser that opened it, stop
        /// working at once (a running daemon too). For a token that was shown or shared.
        #[arg(long)]
        new_token: bool,
    },
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
        /// Days to show, today included.
        #[arg(long, default_value_t = 14)]
        days: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show whether a daemon is running, what it holds, and how each chat channel is doing.
    Status {
        /// Print JSON instead of text.
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
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Who may talk to the agent through chat channels.
    #[command(subcommand)]
    Pairing(PairingCommand),
    /// Tool calls that wait for your word, and the tools you said "always" to.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Write a checked copy of the database to FILE (or into a directory), daemon running or not.
    ///
    /// The copy holds memories, sessions, jobs, grants and the audit log, and carries
    /// config.toml and persona.md; never secrets.json. A directory gets a copy named
    /// wasiclaw-DATE.redb. `wasiclaw restore FILE` puts it back. For a copy every day without
    /// asking, set `backup_dir` under [storage] in config.toml.
    Backup {
        /// Where the copy goes: a file name, or a directory.
        file: PathBuf,
    },
    /// Put a backup back in the place of the database (the daemon stopped).
    ///
    /// FILE, made by `wasiclaw backup` or taken into [storage] backup_dir, is checked first: a bad
    /// one changes nothing. The database it replaces is kept beside it. The config.toml and
    /// persona.md it carries are put back where there are none, else written beside yours as
    /// NAME.from-backup. Stop the daemon first (`systemctl --user stop wasiclaw`) and start it
    /// again after.
    Restore {
        /// The copy to put back.
        file: PathBuf,
    },
    /// Messages waiting to be sent through chat channels: retried until they go, or held when
    /// the platform refuses one while later ones to the same chat go through.
    Outbox {
        /// Give up on the queued message with this id (say, to a chat that no longer exists).
        #[arg(long, value_name = "ID", conflicts_with = "retry")]
        drop: Option<u64>,
        /// Send this held message again. A message is held, not retried, when the platform
        /// refused it while a later one to the same chat went through.
        #[arg(long, value_name = "ID")]
        retry: Option<u64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Messages to you: from skills granted --notify, scheduled jobs, and wasiclaw itself.
    Notifications {
        /// How many, the newest.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// A model endpoint given on the command line or in the environment; it is
/// tried before the `[[providers]]` of config.toml.
#[derive(Args)]
pub(crate) struct ModelArgs {
    /// API family: openai (also OpenRouter, Ollama, llama.cpp, vLLM, LM Studio) or anthropic.
    #[arg(long, env = "WASICLAW_PROVIDER", default_value = "openai", value_parser = ["openai", "anthropic"])]
    provider: String,
    /// e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1
    #[arg(long, env = "WASICLAW_BASE_URL", requires = "model")]
    base_url: Option<String>,
    /// The model's name at that endpoint, e.g. gpt-4o-mini or llama3.2.
    #[arg(long, env = "WASICLAW_MODEL", requires = "base_url")]
    model: Option<String>,
    /// Name of the secret holding the API key (`wasiclaw secrets set NAME`).
    #[arg(long, env = "WASICLAW_API_KEY_SECRET")]
    api_key_secret: Option<String>,
}

impl ModelArgs {
    pub(crate) fn provider(self) -> Option<ProviderConfig> {
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
pub(crate) enum SkillsCommand {
    /// Every skill in the skills folder with its status and rights.
    List {
        /// One JSON object per line, per skill.
        #[arg(long)]
        json: bool,
    },
    /// The skills and channels built into this binary, and whether skills/ has them.
    Available {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Install bundled skills or channels into skills/ (they then wait for your approval and
    /// grants like any component).
    #[command(after_help = "Examples:\n  wasiclaw skills add notes\n  wasiclaw skills add telegram weather\n  \
        wasiclaw skills add --all")]
    Add {
        /// Names from `wasiclaw skills available`.
        #[arg(required_unless_present = "all")]
        names: Vec<String>,
        /// Every bundled skill and channel.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Replace a file of the same name that holds another build (say, your own).
        #[arg(long)]
        force: bool,
    },
    /// Compile every component not compiled yet, one at a time, with progress. The daemon does
    /// this in the background by itself; run it to prepare a board before the first start (or
    /// after an upgrade), or to watch a running daemon finish.
    Precompile,
    /// A skill's tools, their JSON schemas, what it asks for and what it was granted.
    Inspect {
        /// The skill or channel, as `wasiclaw skills list` names it.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What changed since the build you approved: what it asks for and, for a script, its source.
    Diff {
        /// The skill or channel, as `wasiclaw skills list` names it.
        name: String,
    },
    /// Take a skill or channel away: its file, its grant, your "always" answers for its
    /// tools and a channel's pairings, so adding it again asks again. What it stored (kv,
    /// memories, files, a channel's conversations and waiting messages) is kept unless --erase.
    Remove {
        /// The skill or channel, as `wasiclaw skills list` names it.
        name: String,
        /// Erase what it stored too: its kv, the memories it saved, its files directory, a
        /// channel's conversations and the messages waiting through it.
        #[arg(long)]
        erase: bool,
    },
    /// Grant rights. Effective rights are what the skill asks for AND what you grant.
    #[command(after_help = "Examples:\n  wasiclaw skills grant notes --kv\n  \
        wasiclaw skills grant web-fetch --http https://en.wikipedia.org/\n  \
        wasiclaw skills grant weather --http https://api.open-meteo.com/v1/,GET\n  \
        wasiclaw skills grant telegram --http https://api.telegram.org/ --secret TELEGRAM_TOKEN\n  \
        wasiclaw skills grant notes --all-requested")]
    Grant {
        /// The skill or channel, as `wasiclaw skills list` names it.
        name: String,
        #[command(flatten)]
        rights: Rights,
        /// Grant everything the skill asks for.
        #[arg(long)]
        all_requested: bool,
        /// Only if it is still this build (the sha256 `skills inspect` shows, or its first 12
        /// digits): one that changed since you read it is refused.
        #[arg(long, value_name = "SHA")]
        build: Option<String>,
    },
    /// Approve this build of a component: a new or changed build runs, reaches the model or
    /// starts as a channel only after this (or a grant). Keeps the rights its previous version also
    /// asked for; anything new still needs `grant`.
    #[command(
        after_help = "A changed build shows as `needs-approval (changed: OLD → NEW)` in `wasiclaw skills list`\n\
        and carries no rights, kv, files or channel state until you approve it:\n  \
        wasiclaw skills approve telegram\n\
        wasiclaw skills approve telegram --build 3f9a1c77e2b0   # only the build you inspected\n\
        To let future builds of one component keep their rights without asking (e.g. one you build\n\
        yourself), add --carry-over; --no-carry-over asks again."
    )]
    Approve {
        /// The skill or channel, as `wasiclaw skills list` names it.
        name: String,
        /// Future changed builds keep the rights their previous version also asked for.
        #[arg(long, conflicts_with = "no_carry_over")]
        carry_over: bool,
        /// Ask again for every changed build (the default).
        #[arg(long)]
        no_carry_over: bool,
        /// Only if it is still this build (the sha256 `skills inspect` shows, or its first 12
        /// digits): one that changed since you read it is refused.
        #[arg(long, value_name = "SHA")]
        build: Option<String>,
    },
    /// Take rights back.
    Revoke {
        /// The skill or channel, as `wasiclaw skills list` names it.
        name: String,
        #[command(flatten)]
        rights: Rights,
        /// Revoke every grant of this skill.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args)]
pub(crate) struct Rights {
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
pub(crate) struct RightFlags(grants::Rights);

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
pub(crate) enum CronCommand {
    /// Add a job. WHEN is `every 10m` (s, m, h, d), `at 2026-12-01T08:00`, or a cron expression.
    #[command(after_help = "Examples:\n  \
        wasiclaw cron add '0 8 * * mon-fri' --tz Europe/Berlin --prompt 'Send me the weather for Berlin'\n  \
        wasiclaw cron add 'every 15m' --check mail.any-new --prompt 'Summarize my new mail'\n  \
        wasiclaw cron add 'at 2026-12-24T09:00' --prompt 'Remind me to call grandma'\n  \
        wasiclaw cron add 'every 1h' --tool notes.list")]
    Add {
        /// `every 10m` (s, m, h, d), `at 2026-12-01T08:00` (in --tz), or a cron expression such as `0 8 * * mon-fri`.
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
        /// JSON arguments for --check.
        #[arg(long)]
        check_args: Option<String>,
        /// After downtime: skip missed fires, or run once (default: run-once for `at`, skip otherwise).
        #[arg(long, value_parser = ["skip", "run-once"])]
        missed: Option<String>,
        /// A short name for `cron list`.
        #[arg(long)]
        name: Option<String>,
    },
    /// Jobs and their next fire times.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete a job for good (also one the model cancelled).
    Rm {
        /// The job's id (`wasiclaw cron list` shows it).
        id: u64,
    },
    /// What the model cancelled in the last 30 days: each can be brought back with `restore`.
    Cancelled {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Bring back a job the model cancelled; it fires next on its schedule from now.
    Restore {
        /// The job's id (`wasiclaw cron cancelled` shows it).
        id: u64,
    },
    /// Run a job now (an extra run; its schedule is unchanged otherwise).
    RunNow {
        /// The job's id (`wasiclaw cron list` shows it).
        id: u64,
    },
    /// Past runs, newest first.
    History {
        /// Only this job's runs (`cron list` shows ids).
        id: Option<u64>,
        /// How many runs, the newest.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum MemoryCommand {
    /// Remember something: `wasiclaw memory add "Ada prefers tea" --tag people`.
    Add {
        /// What to remember.
        #[arg(required = true)]
        text: Vec<String>,
        /// A tag to file it under (again for more).
        #[arg(long)]
        tag: Vec<String>,
        /// Always keep it in the model's context.
        #[arg(long)]
        pin: bool,
    },
    /// Search by keywords (and meaning, with embeddings configured).
    Search {
        /// Words to look for.
        #[arg(required = true)]
        query: Vec<String>,
        /// Results at most.
        #[arg(long, default_value_t = 5)]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every memory, oldest first.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Embed the memories that have none (saved or imported while the embeddings endpoint was
    /// down, or before one was configured), with progress. Safe to run again.
    Embed,
    /// Erase a memory by id, for good (also one the model forgot).
    Forget {
        /// The memory's id (`wasiclaw memory list` or `search` shows it).
        id: u64,
    },
    /// What the model forgot in the last 30 days: each can be brought back with `restore`.
    Forgotten {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Bring back a memory the model forgot, as it was (id, tags, pin).
    Restore {
        /// The memory's id (`wasiclaw memory forgotten` shows it).
        id: u64,
    },
    /// Keep a memory in the model's context always.
    Pin {
        /// The memory's id (`wasiclaw memory list` or `search` shows it).
        id: u64,
    },
    /// Undo `pin`: recall the memory only when a conversation is about it.
    Unpin {
        /// The memory's id (`wasiclaw memory list` or `search` shows it).
        id: u64,
    },
    /// Write all memories as JSON Lines (to FILE, or stdout).
    Export {
        /// The file to write (yours alone to read; one there is replaced); stdout if none.
        file: Option<PathBuf>,
    },
    /// Read memories from JSON Lines (FILE, or `-` for stdin); memories already kept (the same text) are skipped, and one whose id is taken here gets a new one.
    Import {
        /// A file `memory export` wrote (or `-` for stdin).
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
pub(crate) enum PairingCommand {
    /// Paired senders and pending requests.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Approve the sender who was given CODE.
    Approve {
        /// The code the sender was given in their chat.
        code: String,
        /// Let them approve others from their chat with `/approve CODE`.
        #[arg(long)]
        admin: bool,
    },
    /// Forget a sender (paired or pending): `wasiclaw pairing revoke telegram 12345`.
    Revoke {
        /// The channel they wrote through, e.g. `telegram`.
        channel: String,
        /// Their id on it (`wasiclaw pairing list` shows it).
        sender: String,
        /// The group chat of a pairing made there (`pairing list` shows it).
        #[arg(long, value_name = "CHAT")]
        group: Option<String>,
    },
    /// Set what a paired non-admin may use. By default they get their own session and
    /// read-only tools, and no memory, `/tool` or anything that writes, sends or spends.
    #[command(after_help = "Examples:\n  wasiclaw pairing grant telegram 12345 --memory\n  \
        wasiclaw pairing grant telegram 12345 --tools write\n  \
        wasiclaw pairing grant telegram 12345 --daily-tokens 20000\n  wasiclaw pairing grant telegram 12345   # back to the defaults")]
    Grant {
        /// The channel they wrote through, e.g. `telegram`.
        channel: String,
        /// Their id on it (`wasiclaw pairing list` shows it).
        sender: String,
        /// The group chat of a pairing made there (`pairing list` shows it).
        #[arg(long, value_name = "CHAT")]
        group: Option<String>,
        /// Your long-term memory: recall, search and save.
        #[arg(long)]
        memory: bool,
        /// The riskiest tools they may cause: read, write, send or spend. Scheduling tasks
        /// and proposing skills stay yours: a task runs as you.
        #[arg(long, value_name = "RISK", value_parser = parse_risk)]
        tools: Option<wasiclaw::approvals::Risk>,
        /// `/tool SKILL.TOOL {json}` in their chat, for the tools `--tools` allows and your
        /// `[tools]` policy lets run unasked. Approving skills stays yours alone.
        #[arg(long)]
        direct_tools: bool,
        /// Model tokens they may spend per UTC day (default: `[agent]
        /// person_daily_token_budget`, 100,000; 0: only your daily budget binds them).
        #[arg(long, value_name = "N")]
        daily_tokens: Option<u64>,
    },
}

pub(crate) fn parse_risk(s: &str) -> Result<wasiclaw::approvals::Risk, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("`{s}` is not a risk: use read, write, send or spend"))
}

pub(crate) fn parse_answer(s: &str) -> Result<wasiclaw::approvals::Answer, String> {
    wasiclaw::approvals::Answer::parse(s).ok_or_else(|| format!("`{s}` is not an answer: use allow, always or deny"))
}

#[derive(Subcommand)]
#[command(after_help = "Each tool has a risk: read, write, send or spend (a skill declares it; raise it with\n\
    [tools.\"SKILL.TOOL\"] risk = \"send\" in config.toml). Tools set to ask (policy = \"ask\"; send and spend by\n\
    default), and any tool above read once the conversation holds untrusted content, wait for your answer\n\
    in the chat you are using: /allow ID, /always ID or /deny ID.")]
pub(crate) enum ApprovalsCommand {
    /// Tools you answered "always" for.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask again before TOOL runs (e.g. `notes.add`).
    Revoke {
        /// SKILL.TOOL, as `wasiclaw approvals list` shows it.
        tool: String,
    },
    /// Answer a waiting tool call: allow, always or deny.
    Answer {
        /// The question's number, as the question shows it.
        id: u64,
        /// allow (this call), always (this tool from now on) or deny.
        #[arg(value_parser = parse_answer)]
        answer: wasiclaw::approvals::Answer,
    },
}

#[derive(Subcommand)]
pub(crate) enum ServiceCommand {
    /// Write the unit for this binary and state dir, then enable and start it.
    #[command(
        after_help = "Examples:\n  wasiclaw service install --user     # your own service; add `loginctl enable-linger $USER` to run without a login\n  \
        sudo wasiclaw service install      # a system service, run as you\n  \
        sudo wasiclaw service install --encrypt-secrets   # and secrets.json sealed with a systemd credential"
    )]
    Install {
        #[command(flatten)]
        at: ServiceAt,
        /// Only write the unit; do not enable or start it.
        #[arg(long)]
        no_start: bool,
        /// Seal secrets.json at rest with a key kept as a systemd credential (system services).
        #[arg(long, conflicts_with = "user")]
        encrypt_secrets: bool,
    },
    /// Stop and disable the service and remove its unit.
    Uninstall {
        #[command(flatten)]
        at: ServiceAt,
    },
    /// What systemd says about the service.
    Status {
        #[command(flatten)]
        at: ServiceAt,
    },
}

/// Which service: a user's or the system's, and where its unit lives.
#[derive(Args)]
pub(crate) struct ServiceAt {
    /// A user service (`systemctl --user`) instead of a system one.
    #[arg(long)]
    pub(crate) user: bool,
    /// The directory of unit files (default: ~/.config/systemd/user or /etc/systemd/system).
    #[arg(long, value_name = "DIR")]
    pub(crate) unit_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum NewCommand {
    /// A JavaScript script skill, written straight into skills/NAME.js: the built-in interpreter
    /// runs it, so there is nothing to build or install.
    Script {
        /// The skill's name: lowercase letters, digits, `-` and `_`.
        name: String,
    },
    /// A Rust component project (needs `rustup target add wasm32-wasip2`).
    Rust {
        /// The skill's name: lowercase letters, digits, `-` and `_`.
        name: String,
        /// Where to write it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A Python component project (needs `pip install componentize-py`).
    Python {
        /// The skill's name: lowercase letters, digits, `-` and `_`.
        name: String,
        /// Where to write it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A JavaScript component project, built with ComponentizeJS (needs Node.js).
    Js {
        /// The skill's name: lowercase letters, digits, `-` and `_`.
        name: String,
        /// Where to write it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(crate) enum SecretsCommand {
    /// Store a secret; the value is read from stdin (or a hidden prompt), never from arguments.
    Set {
        /// The secret's name, as a rule or config.toml names it (e.g. `TELEGRAM_TOKEN`).
        name: String,
        /// Make a new random value (64 hex characters) and print it once, for a webhook token
        /// you then give the platform. A webhook's check of a secret of 32 bytes or more is not
        /// budgeted by `secret_checks_per_minute`, so strangers' wrong guesses cannot lock out its
        /// deliveries.
        #[arg(long)]
        random: bool,
    },
    /// Secret names (never values).
    List,
    /// Delete a secret.
    Rm {
        /// The secret's name (`wasiclaw secrets list` shows them).
        name: String,
    },
    /// Seal the store with a new key (as root, with the service stopped; see `service install
    /// --encrypt-secrets`). Safe to run again if it was cut short.
    Rotate,
}

impl Rights {
    pub(crate) fn change(self, all: bool) -> anyhow::Result<GrantChange> {
        let http = self.http.iter().map(|s| parse_granted_rule(s)).collect::<Result<Vec<_>, _>>()?;
        let rights = GrantSet { http, secrets: self.secret.into_iter().collect(), rights: self.flags.0 };
        Ok(GrantChange { rights, all, carry_over: None })
    }
}

impl Command {
    /// The local API request a command makes, and whether `--json` was
    /// asked for. (Commands that are not requests, such as `run`, are
    /// handled in main.)
    pub(crate) fn request(self) -> anyhow::Result<(Request, bool)> {
        Ok(match self {
            Command::Usage { days, json } => (Request::Usage { days }, json),
            Command::Cron(cmd) => match cmd {
                CronCommand::Add { when, prompt, tool, args, tz, chat, check, check_args, missed, name } => {
                    let tz =
                        tz.unwrap_or_else(|| jiff::tz::TimeZone::system().iana_name().unwrap_or("UTC").to_string());
                    let missed = missed.map(|m| if m == "skip" { Missed::Skip } else { Missed::RunOnce });
                    let job = NewJob {
                        when,
                        tz,
                        prompt,
                        tool,
                        args,
                        chat,
                        check,
                        check_args,
                        missed,
                        name,
                        ..Default::default()
                    };
                    (Request::CronAdd { job }, false)
                }
                CronCommand::List { json } => (Request::CronList, json),
                CronCommand::Rm { id } => (Request::CronRm { id }, false),
                CronCommand::Cancelled { json } => (Request::CronCancelled, json),
                CronCommand::Restore { id } => (Request::CronRestore { id }, false),
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
                MemoryCommand::Forgotten { json } => (Request::MemoryForgotten, json),
                MemoryCommand::Restore { id } => (Request::MemoryRestore { id }, false),
                MemoryCommand::Embed => (Request::MemoryEmbed, false),
                MemoryCommand::Pin { id } => (Request::MemoryPin { id, pinned: true }, false),
                MemoryCommand::Unpin { id } => (Request::MemoryPin { id, pinned: false }, false),
                MemoryCommand::Export { .. } => (Request::MemoryExport, false),
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
            Command::Status { json } => (Request::Status, json),
            Command::Skills(SkillsCommand::List { json }) => (Request::SkillsList, json),
            Command::Skills(SkillsCommand::Inspect { name, json }) => (Request::SkillsInspect { name }, json),
            Command::Skills(SkillsCommand::Diff { name }) => (Request::SkillsDiff { name }, false),
            Command::Skills(SkillsCommand::Remove { name, erase }) => (Request::SkillsRemove { name, erase }, false),
            Command::Skills(SkillsCommand::Grant { name, rights, all_requested, build }) => {
                let change = rights.change(all_requested)?;
                if change == GrantChange::default() {
                    bail!(
                        "nothing to grant: name rights (--http, --secret, --kv, ...) or --all-requested; see `wasiclaw skills inspect {name}`"
                    );
                }
                (Request::Grant { name, change, build }, false)
            }
            Command::Skills(SkillsCommand::Approve { name, carry_over, no_carry_over, build }) => {
                let carry_over = (carry_over || no_carry_over).then_some(carry_over);
                (Request::Grant { name, change: GrantChange { carry_over, ..Default::default() }, build }, false)
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
                    bail!(
                        "`{target}` is not SKILL.TOOL, e.g. `clock.now`; `wasiclaw skills inspect SKILL` lists tools"
                    );
                };
                (Request::Tool { skill: skill.into(), tool: tool.into(), args }, json)
            }
            Command::Audit { skill, limit, json } => (Request::Audit { skill, limit }, json),
            Command::Notifications { limit, json } => (Request::Notifications { limit }, json),
            Command::Pairing(PairingCommand::List { json }) => (Request::PairingList, json),
            Command::Pairing(PairingCommand::Approve { code, admin }) => {
                (Request::PairingApprove { code, admin }, false)
            }
            Command::Pairing(PairingCommand::Revoke { channel, sender, group }) => {
                let sender = wasiclaw::pairing::key(&sender, group.as_deref());
                (Request::PairingRevoke { channel, sender }, false)
            }
            Command::Pairing(PairingCommand::Grant {
                channel,
                sender,
                group,
                memory,
                tools,
                direct_tools,
                daily_tokens,
            }) => {
                let sender = wasiclaw::pairing::key(&sender, group.as_deref());
                let scope = wasiclaw::pairing::Scope { memory, max_risk: tools, direct_tools, daily_tokens };
                (Request::PairingGrant { channel, sender, scope }, false)
            }
            Command::Approvals(ApprovalsCommand::List { json }) => (Request::ApprovalsList, json),
            Command::Approvals(ApprovalsCommand::Revoke { tool }) => (Request::ApprovalsRevoke { tool }, false),
            Command::Approvals(ApprovalsCommand::Answer { id, answer }) => (Request::Answer { id, answer }, false),
            Command::Backup { file } => {
                let path = std::path::absolute(&file).with_context(|| format!("cannot resolve {}", file.display()))?;
                (Request::Backup { path }, false)
            }
            Command::Outbox { drop: Some(id), .. } => (Request::OutboxDrop { id }, false),
            Command::Outbox { retry: Some(id), .. } => (Request::OutboxRetry { id }, false),
            Command::Outbox { drop: None, retry: None, json } => (Request::Outbox, json),
            Command::Run { .. }
            | Command::Compile { .. }
            | Command::Doctor { .. }
            | Command::Open { .. }
            | Command::Restore { .. }
            | Command::Chat { .. }
            | Command::Secrets(_)
            | Command::Service(_)
            | Command::New(_)
            | Command::Skills(
                SkillsCommand::Precompile | SkillsCommand::Available { .. } | SkillsCommand::Add { .. },
            ) => {
                bail!("this command is not a request")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `--help` teaches: every command and subcommand says what it does,
    /// and every argument and option what it is for.
    #[test]
    fn every_command_says_what_it_does() {
        fn walk(cmd: &clap::Command, path: &str, silent: &mut Vec<String>) {
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help" && !s.is_hide_set()) {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    silent.push(path.clone());
                }
                for arg in sub.get_arguments().filter(|a| a.get_help().is_none() && !a.is_hide_set()) {
                    silent.push(format!("{path} <{}>", arg.get_id()));
                }
                walk(sub, &path, silent);
            }
        }
        let mut silent = Vec::new();
        walk(&Cli::command(), "wasiclaw", &mut silent);
        assert!(silent.is_empty(), "commands or arguments without a word in --help: {silent:?}");
    }
}
