#!/usr/bin/env python3
"""Growth benchmark (issue 13, point 8): how a release daemon's warm start,
idle RSS, per-call time and per-turn tokens grow with the number of skills
(1, 10, 50), memories (1k, 10k, 100k) and jobs (10, 1,000).

Each row is a fresh state dir. Its skills are the bundled ones and two
fixtures (clock, notes, web-fetch, weather, hello, legacy), then copies of
the `minimal` fixture renamed in place ("hello" -> "gr007"...: same length,
so the component stays valid), each a distinct component with its own
compile, name and tool; all are approved with what they ask for. Memories are synthetic notes
imported as JSON lines; jobs are daily `clock.now` jobs. Tokens are the
real first request's characters / 4, as a loopback fake model receives it
for the message "hello". Calls are `clock.now` through the local API.
Run with `just bench` or `python3 benches/growth.py`; prints figures only.
"""
import http.server, json, os, random, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/wasiclaw")
WASM = os.path.join(ROOT, "target/wasm/wasm32-wasip2/release")
REAL = [("clock", "clock"), ("notes", "notes"), ("web_fetch", "web-fetch"), ("weather", "weather"),
        ("minimal", "hello"), ("legacy_skill", "legacy")]


class FakeModel(http.server.BaseHTTPRequestHandler):
    """An OpenAI-style endpoint that records each request body's size."""
    sizes = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        FakeModel.sizes.append(len(body))
        chunks = [{"choices": [{"index": 0, "delta": {"content": "hi"}}]},
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": len(body) // 4, "completion_tokens": 1}}]
        out = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out.encode())

    def log_message(self, *_):
        pass


def request(state, op, **fields):
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(state, "wasiclaw.sock"))
    s.sendall((json.dumps({"op": op, **fields}) + "\n").encode())
    lines = s.makefile().read().splitlines()
    s.close()
    return json.loads(lines[-1])


def start(state):
    t0 = time.perf_counter()
    proc = subprocess.Popen([BIN, "--state-dir", state, "run"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "WASICLAW_LOG": "warn"})
    while True:
        try:
            request(state, "status")
            return proc, (time.perf_counter() - t0) * 1000
        except (OSError, ValueError, IndexError):
            time.sleep(0.001)


def settled(state, skills):
    """Wait until every component is compiled and loaded."""
    for _ in range(3000):
        listed = json.dumps(request(state, "skills-list"))
        if listed.count('"compiling"') == 0 and listed.count('"name"') >= skills:
            return
        time.sleep(0.1)
    raise SystemExit(f"components did not settle: {listed[:500]}")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024


def claw(state, *args, stdin=""):
    out = subprocess.run([BIN, "--state-dir", state, *args], input=stdin, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"wasiclaw {' '.join(args)}: {out.stderr}")
    return out.stdout


def row(label, skills, memories, jobs, port):
    state = tempfile.mkdtemp()
    try:
        os.makedirs(f"{state}/skills")
        with open(f"{state}/config.toml", "w") as f:
            f.write('[gateway]\nenabled = false\n'
                    f'[[providers]]\nkind = "openai"\nbase_url = "http://127.0.0.1:{port}/v1"\nmodel = "fake"\n')
        names = []
        for file, name in REAL[:skills]:
            shutil.copy(f"{WASM}/{file}.wasm", f"{state}/skills/")
            names.append(name)
        hello = open(f"{WASM}/minimal.wasm", "rb").read()
        assert hello.count(b"hello") >= 1
        for i in range(len(REAL), skills):
            with open(f"{state}/skills/gr{i:03}.wasm", "wb") as f:
                f.write(hello.replace(b"hello", f"gr{i:03}".encode()))
            names.append(f"gr{i:03}")
        if memories:
            rng = random.Random(7)
            words = [f"w{n}" for n in range(6000)]
            weights = [1 / (n + 1) for n in range(6000)]
            with open(f"{state}/memories.jsonl", "w") as f:
                for i in range(memories):
                    text = " ".join(rng.choices(words, weights, k=rng.randint(6, 20)))
                    f.write(json.dumps({"id": i + 1, "text": text, "source": "import", "created_ms": 0}) + "\n")
            claw(state, "memory", "import", f"{state}/memories.jsonl")
        proc, _ = start(state)
        try:
            settled(state, skills)
            for name in names:
                granted = subprocess.run([BIN, "--state-dir", state, "skills", "grant", name, "--all-requested"],
                                         capture_output=True)
                if granted.returncode != 0:
                    claw(state, "skills", "approve", name)
            for i in range(jobs):
                reply = request(state, "cron-add", job={"when": "every 1d", "tz": "UTC", "tool": "clock.now",
                                                       "args": '{"tz":"UTC"}', "chat": "terminal:default",
                                                       "name": f"job{i}"})
                assert "ok" in json.dumps(reply).lower(), reply
        finally:
            proc.terminate(); proc.wait()
        ready = []
        for _ in range(3):
            proc, ms = start(state)
            ready.append(ms)
            proc.terminate(); proc.wait()
        proc, _ = start(state)
        try:
            settled(state, skills)
            calls = []
            for _ in range(200):
                t0 = time.perf_counter()
                reply = request(state, "tool", skill="clock", tool="now", args='{"tz":"UTC"}')
                calls.append((time.perf_counter() - t0) * 1000)
            assert "+00:00" in json.dumps(reply) or "Z" in json.dumps(reply), reply
            time.sleep(5)
            rss = rss_mib(proc.pid)
            # Idle for two of the daemon's 15 s windows: it has settled
            # (freed heap returned, code pages unmapped).
            time.sleep(32)
            idle_rss = rss_mib(proc.pid)
            FakeModel.sizes.clear()
            claw(state, "chat", stdin="hello\n")
            tokens = FakeModel.sizes[0] // 4 if FakeModel.sizes else float("nan")
        finally:
            proc.terminate(); proc.wait()
        calls.sort()
        print(f"{label:<24} {statistics.median(ready):>9.1f} {rss:>9.1f} {idle_rss:>9.1f} {calls[100]:>9.2f} "
              f"{calls[197]:>9.2f} {tokens:>8}")
    finally:
        shutil.rmtree(state)


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--target", "wasm32-wasip2"], check=True,
                   cwd=os.path.join(ROOT, "skills-wasm"), env={**os.environ, "CARGO_TARGET_DIR": f"{ROOT}/target/wasm"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    print("growth: warm ready (median of 3), RSS 5 s after 200 calls and again after 37 s idle, clock.now through")
    print("the local API (200 calls), tokens of the first request for \"hello\" (characters / 4)")
    print(f"{'':<24} {'ready ms':>9} {'RSS MiB':>9} {'idle MiB':>9} {'call p50':>9} {'call p99':>9} {'tokens':>8}")
    rows = [("1 skill", 1, 0, 0), ("10 skills", 10, 0, 0), ("50 skills", 50, 0, 0),
            ("10 skills, 1k memories", 10, 1000, 0), ("10 skills, 10k memories", 10, 10000, 0),
            ("10 skills, 100k memories", 10, 100000, 0),
            ("10 skills, 10 jobs", 10, 0, 10), ("10 skills, 1,000 jobs", 10, 0, 1000)]
    only = sys.argv[1:]
    for label, skills, memories, jobs in rows:
        if not only or label in only:
            row(label, skills, memories, jobs, port)


if __name__ == "__main__":
    main()
