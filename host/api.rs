//! The local API: one JSON request and one JSON reply per connection on
//! `<state-dir>/wasiclaw.sock` (mode 0600). While the daemon runs it owns
//! the database (redb locks it to one process), so the CLI sends it the
//! same `Request` it would otherwise run itself.

use crate::grants::GrantChange;
use crate::runtime::Runtime;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Everything the CLI can ask of a running daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    SkillsList,
    SkillsInspect { name: String },
    Grant { name: String, change: GrantChange },
    Revoke { name: String, change: GrantChange },
    Tool { skill: String, tool: String, args: String },
    Audit { skill: Option<String>, limit: usize },
    Notifications { limit: usize },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    Ok(Value),
    Err(String),
}

/// Run one request against the runtime.
pub async fn dispatch(rt: &Runtime, request: Request, daemon: bool) -> Reply {
    let value = async {
        Ok::<Value, crate::runtime::RuntimeError>(match request {
            Request::Status => json!({
                "daemon": daemon,
                "pid": std::process::id(),
                "state_dir": rt.paths.state_dir,
                "skills": rt.skills()?.len(),
                "audit_records": rt.db.audit_count()?,
            }),
            Request::SkillsList => serde_json::to_value(rt.skills()?)?,
            Request::SkillsInspect { name } => serde_json::to_value(rt.inspect(&name)?)?,
            Request::Grant { name, change } => {
                let (info, notes) = rt.change_grant(&name, &change, false)?;
                json!({"skill": info, "notes": notes})
            }
            Request::Revoke { name, change } => {
                let (info, notes) = rt.change_grant(&name, &change, true)?;
                json!({"skill": info, "notes": notes})
            }
            Request::Tool { skill, tool, args } => serde_json::to_value(rt.call_tool(&skill, &tool, &args).await?)?,
            Request::Audit { skill, limit } => serde_json::to_value(rt.audit(skill.as_deref(), limit)?)?,
            Request::Notifications { limit } => serde_json::to_value(rt.notifications(limit)?)?,
        })
    }
    .await;
    match value {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Err(e.to_string()),
    }
}

/// Serve the local API until the task is dropped.
pub async fn serve(rt: Arc<Runtime>, listener: UnixListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("local API accept failed: {e}");
                continue;
            }
        };
        let rt = rt.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(read).read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(request) => dispatch(&rt, request, true).await,
                Err(e) => Reply::Err(format!("bad request (is the CLI the same version as the daemon?): {e}")),
            };
            let mut out = serde_json::to_vec(&reply).expect("replies serialize");
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

/// Send a request to the daemon, or `None` if no daemon listens.
pub async fn call_daemon(socket: &Path, request: &Request) -> anyhow::Result<Option<Reply>> {
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        // No socket, or a stale one left by a killed daemon.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) => return Err(anyhow::anyhow!("cannot reach the daemon at {}: {e}", socket.display())),
    };
    let (read, mut write) = stream.into_split();
    let mut out = serde_json::to_vec(request)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let reply = serde_json::from_str(&line).map_err(|e| {
        anyhow::anyhow!("the daemon sent a reply this CLI does not understand ({e}); are both the same version?")
    })?;
    Ok(Some(reply))
}
