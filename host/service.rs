//! `wasiclaw service`: run the daemon under systemd, restarted on failure
//! and hardened. The unit is written by the binary itself, so its paths
//! are the ones in use (this executable, this state directory).
//!
//! Hardening leaves out `MemoryDenyWriteExecute`: Cranelift writes the code
//! it compiles and then runs it, which that setting forbids.
//!
//! The unit is `Type=notify` with a watchdog: the daemon says `READY=1`
//! once it answers, then `WATCHDOG=1` at half of `WatchdogSec` from its
//! async runtime, so a daemon whose runtime hangs is restarted, not left
//! silent for months ([`notify`], [`watchdog_every`]). Starting has no
//! time limit: opening a database that needs repair after a power cut can
//! take minutes on an SD card, and being killed for it would loop.
//!
//! With `--encrypt-secrets` the secrets store is sealed with a random key
//! kept as a systemd credential (`<state>/secrets.key.cred`, made by
//! `systemd-creds encrypt` with the machine's host key or TPM), which the
//! unit hands the daemon with `LoadCredentialEncrypted=`. Only system
//! services: systemd before 256 cannot decrypt a credential for a user's
//! service manager.

use crate::secrets::{CREDENTIAL, SealKey};
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Seconds without a `WATCHDOG=1` before systemd restarts the daemon:
/// long enough for a one-core board whose only worker is in a slow commit.
const WATCHDOG_SEC: u32 = 120;

/// Tell systemd `state` (`READY=1`, `WATCHDOG=1`, `STOPPING=1`) when it
/// started this process as `Type=notify` (`$NOTIFY_SOCKET`, a path or an
/// abstract `@name`); nothing otherwise.
pub fn notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(to) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let addr = match to.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&to),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr));
    if let Err(e) = sent {
        tracing::warn!("cannot tell systemd {state}: {e}");
    }
}

/// How often to send `WATCHDOG=1`: half the `WatchdogSec` systemd set
/// (`$WATCHDOG_USEC`) for this process (`$WATCHDOG_PID`, when set); None
/// when no watchdog watches it.
pub fn watchdog_every() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    if pid.is_some_and(|pid| pid != std::process::id().to_string()) || usec == 0 {
        return None;
    }
    Some(std::time::Duration::from_micros(usec / 2))
}

/// Where the unit goes and how systemd is asked about it.
pub struct Service {
    /// A user service (`systemctl --user`), or a system one.
    pub user: bool,
    /// The directory of unit files.
    pub unit_dir: PathBuf,
    /// systemd's version, if `systemctl --version` says.
    pub systemd: Option<u32>,
}

impl Service {
    /// The usual unit directory for a user or a system service.
    pub fn new(user: bool, unit_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let unit_dir = match unit_dir {
            Some(dir) => dir,
            None if user => {
                let config = std::env::var_os("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
                config.ok_or_else(|| anyhow::anyhow!("neither XDG_CONFIG_HOME nor HOME is set"))?.join("systemd/user")
            }
            None => PathBuf::from("/etc/systemd/system"),
        };
        let version = Command::new("systemctl").arg("--version").output().ok();
        let systemd = version.and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1)?.parse().ok());
        Ok(Service { user, unit_dir, systemd })
    }

    /// The unit file.
    pub fn unit_file(&self) -> PathBuf {
        self.unit_dir.join("wasiclaw.service")
    }

    /// The unit's text for running `exe` on `state_dir`; with `sealed`,
    /// it passes the secrets key. `backups`, where automatic backups go,
    /// is writable too (if it exists when the service starts).
    pub fn unit(&self, exe: &Path, state_dir: &Path, sealed: bool, backups: Option<&Path>) -> String {
        let backups =
            backups.map(|d| format!(" {}", quoted(Path::new(&format!("-{}", d.display()))))).unwrap_or_default();
        let credential = if sealed {
            format!("LoadCredentialEncrypted={CREDENTIAL}:{}\n", quoted(&credential_file(state_dir)))
        } else {
            String::new()
        };
        // Older systemd warns of the keys at every reload, so they are
        // written only for one that knows them.
        let slower = match self.systemd {
            Some(v) if v < 254 => "",
            _ => {
                "# A failure that stays (a full disk) is retried ever more slowly, up to every 5 minutes.\n\
                  RestartSteps=6\nRestartMaxDelaySec=300\n"
            }
        };
        let (target, user) = if self.user {
            ("default.target", String::new())
        } else {
            let name = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "root".into());
            ("multi-user.target", format!("User={name}\n"))
        };
        format!(
            "# Written by `wasiclaw service install`; `wasiclaw service uninstall` removes it.\n\
             [Unit]\nDescription=wasiclaw, a personal AI agent with sandboxed skills\n\
             After=network-online.target\nWants=network-online.target\n\n\
             [Service]\n{user}{credential}ExecStart={exe} --state-dir {state} run\n\
             Type=notify\nTimeoutStartSec=infinity\nWatchdogSec={WATCHDOG_SEC}\n\
             Restart=on-failure\nRestartSec=5\n{slower}\
             # SIGTERM: the daemon stops taking work and exits; queued messages and jobs are in the database.\n\
             KillSignal=SIGTERM\nTimeoutStopSec=30\n\
             NoNewPrivileges=yes\nProtectSystem=strict\nReadWritePaths={state}{backups}\nPrivateTmp=yes\n\
             PrivateDevices=yes\nProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectControlGroups=yes\n\
             ProtectClock=yes\nRestrictSUIDSGID=yes\nRestrictRealtime=yes\nRestrictNamespaces=yes\n\
             LockPersonality=yes\nSystemCallArchitectures=native\nUMask=0077\n\n\
             [Install]\nWantedBy={target}\n",
            exe = quoted(exe),
            state = quoted(state_dir),
        )
    }

    /// `systemctl [--user] ARGS`; the error says what to run by hand.
    pub fn systemctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut cmd = Command::new("systemctl");
        if self.user {
            cmd.arg("--user");
        }
        let shown = format!("systemctl {}{}", if self.user { "--user " } else { "" }, args.join(" "));
        match cmd.args(args).status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => anyhow::bail!("`{shown}` failed ({s}); run it yourself once systemd is reachable"),
            Err(e) => anyhow::bail!("cannot run `{shown}`: {e}; is this a systemd machine?"),
        }
    }
}

/// What is wrong with an installed unit's text `unit` for `state_dir`, if
/// it runs this state dir: the binary it starts is gone (moved by an
/// upgrade), it has no watchdog (written by an older wasiclaw), or it may
/// not write where `backups` go (set after the unit was written, so every
/// copy would fail as a read-only file system).
pub fn stale(unit: &str, state_dir: &Path, backups: Option<&Path>) -> Option<String> {
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart="))?;
    let (exe, _) = exec.split_once(&format!(" --state-dir {} run", quoted(state_dir)))?;
    let exe = exe.trim_matches('"');
    if !Path::new(exe).exists() {
        return Some(format!("the service starts {exe}, which is not there any more"));
    }
    if !unit.lines().any(|l| l.starts_with("WatchdogSec=")) {
        return Some(
            "the service has no watchdog (an older wasiclaw wrote it): a hung daemon would not be restarted".into(),
        );
    }
    let writable = unit.lines().filter_map(|l| l.strip_prefix("ReadWritePaths=")).collect::<Vec<_>>().join(" ");
    match backups {
        Some(dir) if !writable.contains(&format!("-{}", dir.display())) => Some(format!(
            "the service may not write to [storage] backup_dir {}, so every backup would fail",
            dir.display()
        )),
        _ => None,
    }
}

/// The sealed secrets key of the state dir `state_dir`.
pub fn credential_file(state_dir: &Path) -> PathBuf {
    state_dir.join("secrets.key.cred")
}

/// A fresh random key, encrypted with `systemd-creds` into `file`.
pub fn make_credential(file: &Path) -> anyhow::Result<SealKey> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let name = format!("--name={CREDENTIAL}");
    systemd_creds(&["encrypt", &name, "-", &file.display().to_string()], &key)?;
    Ok(SealKey::from_credential(&key))
}

/// The key the credential `file` holds (decrypting it needs root).
pub fn read_credential(file: &Path) -> anyhow::Result<SealKey> {
    let name = format!("--name={CREDENTIAL}");
    systemd_creds(&["decrypt", &name, &file.display().to_string(), "-"], &[]).map(|k| SealKey::from_credential(&k))
}

fn systemd_creds(args: &[&str], input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let shown = format!("systemd-creds {}", args.join(" "));
    let mut child = Command::new("systemd-creds")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{shown}`: is systemd (252 or later) installed?"))?;
    child.stdin.take().expect("piped").write_all(input)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "`{shown}` failed: {} (it needs root for the machine's credential key)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// A path as a unit file takes it: quoted if it holds a space.
fn quoted(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains(char::is_whitespace) { format!("\"{text}\"") } else { text }
}

#[cfg(test)]
mod tests {
    /// A failure that stays is retried ever more slowly where systemd can,
    /// and an older systemd is not given keys it would warn about.
    #[test]
    fn restarts_slow_down_where_systemd_knows_how() {
        let unit = |systemd| {
            let svc = super::Service { user: true, unit_dir: "/u".into(), systemd };
            svc.unit("/bin/wasiclaw".as_ref(), "/s".as_ref(), false, None)
        };
        for new in [Some(254), None] {
            assert!(unit(new).contains("\nRestartSec=5\n#") && unit(new).contains("\nRestartMaxDelaySec=300\n"));
        }
        assert!(!unit(Some(252)).contains("RestartMaxDelaySec") && unit(Some(252)).contains("\nRestartSec=5\n"));
    }
}
