//! Shared test fixtures: guest components built once per run, a state dir
//! per test, the real `wasiclaw` binary, a daemon handle and a loopback
//! HTTP server that records what it receives.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use wasiclaw::config::Paths;
use wasiclaw::runtime::{Runtime, ToolOutcome};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The longest any CLI command of a test may run (a first compile of the
/// Python runtime on a loaded 2-core machine is the slowest).
pub const CLI_DEADLINE: Duration = Duration::from_secs(600);

/// Build every guest in skills-wasm/ once per test run; returns the dir of
/// the built `.wasm` files.
pub fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = Path::new(ROOT).join("target/wasm");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(Path::new(ROOT).join("skills-wasm"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo for the guest components");
        assert!(status.success(), "building skills-wasm failed (is `rustup target add wasm32-wasip2` done?)");
        target.join("wasm32-wasip2/release")
    })
}

pub fn guest(name: &str) -> PathBuf {
    guests().join(format!("{}.wasm", name.replace('-', "_")))
}

/// The Python example skill, built with componentize-py once per run.
pub fn python_skill() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let out = Path::new(ROOT).join("target/wasm/wordstats.wasm");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let result = Command::new("componentize-py")
            .args([
                "-d",
                "wit",
                "-w",
                "wasiclaw:plugin/skill",
                "componentize",
                "-p",
                "examples/python-skill",
                "app",
                "-o",
            ])
            .arg(&out)
            .current_dir(ROOT)
            .output()
            .expect("componentize-py is not installed: `pip install componentize-py==0.25.1` (.ci/run does this)");
        assert!(result.status.success(), "componentize-py failed: {}", String::from_utf8_lossy(&result.stderr));
        out
    })
}

/// A state dir for one test.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("skills")).unwrap();
        Env { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn paths(&self) -> Paths {
        Paths::new(self.path().to_path_buf())
    }

    pub fn skills(&self) -> PathBuf {
        self.path().join("skills")
    }

    /// Copy a built guest into the skills folder as `<name>.wasm`.
    pub fn install(&self, name: &str) -> PathBuf {
        self.install_file(&guest(name), name)
    }

    pub fn install_file(&self, from: &Path, name: &str) -> PathBuf {
        let to = self.skills().join(format!("{name}.wasm"));
        std::fs::copy(from, &to).unwrap();
        to
    }

    /// A state dir with channel `name` installed, the model at `llm` as
    /// provider, the gateway on `gateway` if given, `settings` appended to
    /// config.toml and `secrets` stored.
    pub fn with_channel(name: &str, llm: &str, gateway: Option<u16>, settings: &str, secrets: &[(&str, &str)]) -> Env {
        let env = Env::new();
        env.install(name);
        let gateway = gateway.map(|p| format!("[gateway]\nbind = \"127.0.0.1:{p}\"\n\n")).unwrap_or_default();
        env.config(&format!(
            "[[providers]]\nkind = \"openai\"\nbase_url = \"{llm}/v1\"\nmodel = \"fake\"\n\n{gateway}{settings}"
        ));
        for (secret, value) in secrets {
            let out = env.cli_stdin(&["secrets", "set", secret], &format!("{value}\n"));
            assert!(out.status.success(), "secrets set {secret}: {}", stderr(&out));
        }
        env
    }

    pub fn config(&self, toml: &str) {
        std::fs::write(self.path().join("config.toml"), toml).unwrap();
    }

    /// An in-process runtime with the folder scanned.
    pub async fn runtime(&self) -> Runtime {
        let rt = Runtime::open(self.paths()).unwrap();
        rt.rescan().await;
        rt
    }

    /// Run the real binary against this state dir.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_stdin(args, "")
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.cli_env(args, stdin, &[])
    }

    /// Run the binary with extra environment variables. A command still
    /// running after [`CLI_DEADLINE`] is killed and fails the test, so a
    /// hang is a red test, not a CI run that never ends.
    pub fn cli_env(&self, args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> Output {
        self.cli_within(args, stdin, envs, CLI_DEADLINE)
    }

    /// `cli_env` that must end within `deadline`.
    pub fn cli_within(&self, args: &[&str], stdin: &str, envs: &[(&str, &str)], deadline: Duration) -> Output {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasiclaw"))
            .envs(envs.iter().copied())
            .arg("--state-dir")
            .arg(self.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let pid = child.id() as libc::pid_t;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
        match rx.recv_timeout(deadline) {
            Ok(out) => out,
            Err(_) => {
                // SAFETY: kill(2) on our own child, not yet reaped: the waiting thread holds it.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("wasiclaw {args:?} still running after {deadline:?}");
            }
        }
    }

    /// `cli` that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "wasiclaw {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `skills list --json`, parsed.
    pub fn list(&self) -> Vec<serde_json::Value> {
        self.ok(&["skills", "list", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Start the daemon; unless the test configured a gateway, on a free port.
    pub fn daemon(&self) -> Daemon {
        let config = std::fs::read_to_string(self.path().join("config.toml")).unwrap_or_default();
        if config.contains("[gateway]") {
            self.daemon_env(&[])
        } else {
            self.daemon_env(&[("WASICLAW_GATEWAY_BIND", "127.0.0.1:0")])
        }
    }

    pub fn daemon_env(&self, envs: &[(&str, &str)]) -> Daemon {
        self.start_daemon(envs, Stdio::null())
    }

    /// Start the daemon with its log written to `log`.
    pub fn daemon_logging_to(&self, log: &Path) -> Daemon {
        self.start_daemon(&[("WASICLAW_GATEWAY_BIND", "127.0.0.1:0")], std::fs::File::create(log).unwrap().into())
    }

    fn start_daemon(&self, envs: &[(&str, &str)], log: Stdio) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_wasiclaw"))
            .envs(envs.iter().copied())
            .arg("--state-dir")
            .arg(self.path())
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let daemon = Daemon { child };
        self.wait_for_daemon();
        daemon
    }

    /// Wait until a daemon answers. Ask the socket itself: a CLI that found
    /// no daemon would open the database in-process (and compile the
    /// folder) meanwhile.
    pub fn wait_for_daemon(&self) {
        let socket = self.path().join("wasiclaw.sock");
        wait_for("the daemon to answer", Duration::from_secs(60), || {
            use std::io::{BufRead, Write};
            let Ok(mut s) = std::os::unix::net::UnixStream::connect(&socket) else { return false };
            let mut line = String::new();
            s.write_all(b"{\"op\":\"status\"}\n").is_ok()
                && std::io::BufReader::new(s).read_line(&mut line).is_ok()
                && line.contains("\"ok\"")
        });
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `wasiclaw run`, killed on drop.
pub struct Daemon {
    pub child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Call a tool through the in-process runtime.
pub async fn call(rt: &Runtime, target: &str, args: &str) -> ToolOutcome {
    let (skill, tool) = target.split_once('.').unwrap();
    rt.call_tool(skill, tool, args).await.unwrap()
}

/// One request the loopback server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

/// A loopback HTTP server: `/echo/...` reflects the request as JSON, a
/// path ending `/hang` never answers, one ending `/big` sends 1 MiB, `/v1/search` and
/// `/v1/forecast` answer like Open-Meteo, `/page` is an HTML page.
pub struct Server {
    pub base: String,
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().fallback(respond).with_state(seen.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { base: format!("http://127.0.0.1:{port}"), port, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn respond(State(seen): State<Arc<Mutex<Vec<Seen>>>>, req: Request) -> Response {
    let record = Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect(),
    };
    seen.lock().unwrap().push(record.clone());
    let path = req.uri().path().to_string();
    if path.ends_with("/hang") {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    // `/to/PORT/REST` redirects to REST on another loopback port.
    if let Some((port, rest)) = path.strip_prefix("/to/").and_then(|p| p.split_once('/')) {
        let to = format!("http://127.0.0.1:{port}/{rest}");
        return Response::builder().status(307).header("location", to).body(Body::empty()).unwrap();
    }
    if path.ends_with("/big") {
        return Response::new(Body::from(vec![b'z'; 1 << 20]));
    }
    let json = |v: serde_json::Value| {
        Response::builder().header("content-type", "application/json").body(Body::from(v.to_string())).unwrap()
    };
    if path.starts_with("/echo/") && path.ends_with("/leak") {
        return leak(&record);
    }
    if path.starts_with("/echo/") {
        let headers: serde_json::Map<String, serde_json::Value> =
            record.headers.into_iter().map(|(k, v)| (k, v.into())).collect();
        return Response::builder()
            .header("x-echo-uri", record.uri.clone())
            .body(Body::from(
                serde_json::json!({"method": record.method, "uri": record.uri, "headers": headers}).to_string(),
            ))
            .unwrap();
    }
    match path.as_str() {
        "/v1/search" => json(serde_json::json!({"results": [{"name": "Berlin", "country": "Germany", "latitude": 52.52437, "longitude": 13.41053}]})),
        "/v1/forecast" => json(serde_json::json!({
            "latitude": 52.52, "longitude": 13.419998,
            "current_units": {"temperature_2m": "°C", "wind_speed_10m": "km/h"},
            "current": {"time": "2026-11-25T12:00", "interval": 900, "temperature_2m": 4.2, "wind_speed_10m": 11.5, "weather_code": 61},
            "daily": {"time": ["2026-11-25"], "temperature_2m_max": [5.9], "temperature_2m_min": [1.3]}
        })),
        "/page" => Response::builder()
            .header("content-type", "text/html")
            .body(Body::from("<html><head><title>t</title><style>p{}</style></head><body><script>evil()</script><h1>Hello &amp; welcome</h1><p>First para.</p></body></html>"))
            .unwrap(),
        _ => Response::builder().status(404).body(Body::from("not found")).unwrap(),
    }
}

/// A hostile server: sends the secret the host put in `x-api-key` back in
/// the spelling `?how=` names (see `egress::LEAKS`).
fn leak(record: &Seen) -> Response {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let secret = record.headers.iter().find(|(k, _)| k == "x-api-key").map(|(_, v)| v.clone()).unwrap_or_default();
    let how = record.uri.split("how=").nth(1).unwrap_or("raw");
    let pct = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let response = Response::builder();
    let (response, body) = match how {
        "upper" => (response, secret.to_uppercase()),
        "percent" => (response, pct(&secret)),
        "percent-lower" => (response, pct(&secret).to_lowercase()),
        "form" => (response, secret.replace(' ', "+").replace(':', "%3a").replace('/', "%2F")),
        "json" => (response, serde_json::json!({ "echo": secret }).to_string().replace('/', "\\/")),
        "base64" => (response, STANDARD.encode(&secret)),
        "base64url" => (response, URL_SAFE.encode(&secret)),
        "base64-1" => (response, STANDARD.encode(format!("x{secret}"))),
        "base64-2" => (response, URL_SAFE.encode(format!("xy{secret}!"))),
        "hex" => (response, hex::encode(&secret).to_uppercase()),
        // As an HTML error page escapes what it quotes.
        "html" => (
            response,
            secret
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("&#x{b:X};") })
                .collect(),
        ),
        "header" => (response.header("x-leak", &secret), String::new()),
        "header-name" => (response.header(format!("x-{}", hex::encode(&secret)), "1"), String::new()),
        "split" => {
            let (a, b) = secret.split_at(secret.len() / 2);
            (response.header("x-part-1", a).header("x-part-2", b), String::new())
        }
        // Compressed, as a server may answer whatever it was asked: the
        // reversed text stands for bytes no scrubber can read.
        "coded" => (response.header("content-encoding", "gzip"), secret.chars().rev().collect()),
        _ => (response, format!("<{secret}>")),
    };
    // An honest server honours a byte range: `bytes=A-B`.
    let range = record.headers.iter().find(|(k, _)| k == "range").and_then(|(_, v)| {
        let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
        Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
    });
    if let Some((a, b)) = range.filter(|(a, b)| a <= b && *b < body.len()) {
        return response.status(206).body(Body::from(body[a..=b].to_string())).unwrap();
    }
    response.body(Body::from(body)).unwrap()
}

/// A copy of a component with a custom section appended: same code, new sha256.
pub fn rebuilt(from: &Path, tag: &str) -> PathBuf {
    let mut bytes = std::fs::read(from).unwrap();
    let name = b"wasiclaw-test";
    let payload = tag.as_bytes();
    bytes.push(0);
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    // Under target/tmp (cargo's scratch space for tests), not the system's /tmp.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wasiclaw-{}-{tag}.wasm", std::process::id()));
    std::fs::write(&out, bytes).unwrap();
    out
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One request a `Recorder` received, with its body.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A loopback platform API that records every request and answers each
/// with the same JSON.
pub struct Recorder {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    /// A request whose body holds this text is refused with HTTP 400, as a
    /// platform refuses one message for good.
    pub refuse: Arc<Mutex<Option<String>>>,
    /// A request whose body holds this text is never answered.
    pub hold: Arc<Mutex<Option<String>>>,
}

/// Texts that, found in a request's body, have it refused or held.
type Matches = (Arc<Mutex<Option<String>>>, Arc<Mutex<Option<String>>>);
type RecorderState = (Arc<Mutex<Vec<Recorded>>>, serde_json::Value, Arc<Mutex<usize>>, Matches);

impl Recorder {
    pub async fn start(answer: serde_json::Value) -> Self {
        Self::failing(answer, 0).await
    }

    /// A recorder whose first `failures` requests get HTTP 503.
    pub async fn failing(answer: serde_json::Value, failures: usize) -> Self {
        let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (refuse, hold): Matches = Default::default();
        let state = (seen.clone(), answer, Arc::new(Mutex::new(failures)), (refuse.clone(), hold.clone()));
        let app = axum::Router::new()
            .fallback(
                |State((seen, answer, failures, (refuse, hold))): State<RecorderState>, req: Request| async move {
                    let (parts, body) = req.into_parts();
                    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                    seen.lock().unwrap().push(Recorded {
                        method: parts.method.to_string(),
                        path: parts.uri.path().to_string(),
                        headers: parts
                            .headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                            .collect(),
                        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                    });
                    let found = |m: &Arc<Mutex<Option<String>>>| {
                        m.lock().unwrap().as_ref().is_some_and(|r| String::from_utf8_lossy(&bytes).contains(r.as_str()))
                    };
                    if found(&hold) {
                        std::future::pending::<()>().await;
                    }
                    if found(&refuse) {
                        return Response::builder().status(400).body(Body::from("message refused")).unwrap();
                    }
                    let mut failures = failures.lock().unwrap();
                    if *failures > 0 {
                        *failures -= 1;
                        return Response::builder().status(503).body(Body::from("try later")).unwrap();
                    }
                    axum::Json(answer).into_response()
                },
            )
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder { base: format!("http://127.0.0.1:{port}"), seen, refuse, hold }
    }

    pub fn seen(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    /// Wait until `n` requests whose path contains `path` arrived.
    pub async fn wait(&self, path: &str, n: usize) -> Vec<Recorded> {
        let start = Instant::now();
        loop {
            let hits: Vec<Recorded> = self.seen().into_iter().filter(|r| r.path.contains(path)).collect();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {n} request(s) to {path}: {hits:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
