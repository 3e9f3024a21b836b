//! The terminal chat: one line in, a streamed reply out, and answers
//! (y/a/n) to tool calls waiting for approval typed while a turn runs.
//! Through the daemon when one runs, in-process otherwise. What the model
//! or a tool wrote is printed with its control characters escaped, so
//! nothing it read can drive the terminal (set the clipboard, hide the
//! approval question that follows).

use anyhow::Context;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use wasiclaw::agent::{Agent, Event};
use wasiclaw::api::{self, Reply, Request, Response};
use wasiclaw::config::{Paths, ProviderConfig};
use wasiclaw::runtime::Runtime;
use wasiclaw::text::{one_line, printable};

/// The terminal chat: one line in, a streamed reply out.
pub(crate) async fn chat(paths: Paths, session: &str, provider: Option<ProviderConfig>) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::AsyncBufReadExt;
    let key = format!("terminal:{session}");
    let daemon = api::call_daemon(&paths.socket(), &Request::Status.into(), &mut |_| {}).await?.is_some();
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
                write!(out, "{}", printable(&text))
            }
            Event::ToolCall { name, arguments } => writeln!(out, "\n  ⚙ {name} {}", one_line(&arguments)),
            Event::ToolResult { name, ok, preview } => {
                writeln!(out, "  ↳ {name} {}: {}", if ok { "ok" } else { "error" }, one_line(&preview))
            }
            Event::Notice { text } => writeln!(out, "  ({})", printable(&text)),
            Event::Proposal { text } => writeln!(out, "\n{}\n", printable(&text)),
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
                Some(agent) => api::dispatch(&agent.rt, Some(agent), None, request.into(), &show).await,
                None => api::call_daemon(&paths.socket(), &request.into(), &mut |e| show(e))
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
                                        api::call_daemon(&paths.socket(), &request.into(), &mut |_| {}).await?;
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
            Reply::Ok(Response::Chat { reply }) if !streamed.load(Ordering::Relaxed) => {
                println!("{}", printable(&reply))
            }
            Reply::Ok(_) => println!(),
            Reply::Err { message, .. } => eprintln!("error: {}", printable(&message)),
            Reply::Event(_) => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}
