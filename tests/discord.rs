//! The Discord channel against a loopback websocket server that plays the
//! gateway (frames as Discord documents them): hello, identify with the
//! token the host filled in, heartbeats and their ACKs, a dispatched
//! message answered over REST, a requested reconnect that resumes (and a
//! replayed dispatch answered once), and a zombie connection abandoned.

use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Env, Recorder};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "discord-bot-token.secret";

/// One client connection to the fake gateway. Heartbeats are ACKed by a
/// background task while `ack` is set; other frames come out of `rx`.
struct Conn {
    path: String,
    tx: mpsc::UnboundedSender<Value>,
    rx: mpsc::UnboundedReceiver<Value>,
    ack: Arc<AtomicBool>,
}

impl Conn {
    fn send(&self, frame: Value) {
        self.tx.send(frame).unwrap();
    }

    /// The next frame with this op, skipping others.
    async fn expect_op(&mut self, op: u64) -> Value {
        let wait = async {
            loop {
                let frame = self.rx.recv().await.expect("the client hung up");
                if frame["op"] == op {
                    return frame;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), wait).await.unwrap_or_else(|_| panic!("no op {op} frame"))
    }
}

#[allow(clippy::result_large_err)] // tungstenite's callback signature
async fn accept(listener: &TcpListener) -> Conn {
    let (tcp, _) =
        tokio::time::timeout(Duration::from_secs(20), listener.accept()).await.expect("no connection").unwrap();
    let path = Arc::new(std::sync::Mutex::new(String::new()));
    let seen = path.clone();
    let ws = tokio_tungstenite::accept_hdr_async(tcp, move |req: &http::Request<()>, resp| {
        *seen.lock().unwrap() = req.uri().to_string();
        Ok(resp)
    })
    .await
    .unwrap();
    let (mut sink, mut stream) = ws.split();
    let (tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
    let (in_tx, rx) = mpsc::unbounded_channel::<Value>();
    let ack = Arc::new(AtomicBool::new(true));
    let acking = ack.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(frame) = out_rx.recv() => {
                    if sink.send(Message::text(frame.to_string())).await.is_err() { break; }
                }
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let frame: Value = serde_json::from_str(&t).unwrap();
                        if frame["op"] == 1 && acking.load(Ordering::SeqCst) {
                            let _ = sink.send(Message::text(json!({"op": 11}).to_string())).await;
                        }
                        let _ = in_tx.send(frame);
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
        }
    });
    let path = path.lock().unwrap().clone();
    Conn { path, tx, rx, ack }
}

fn hello() -> Value {
    json!({"op": 10, "d": {"heartbeat_interval": 300}, "s": null, "t": null})
}

fn message(seq: u64, id: &str, text: &str) -> Value {
    json!({"op": 0, "s": seq, "t": "MESSAGE_CREATE", "d": {
        "id": id, "channel_id": "1100", "content": text, "type": 0,
        "author": {"id": "80351110224678912", "username": "nelly", "global_name": "Nelly", "bot": false}
    }})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_identifies_heartbeats_resumes_and_answers_once() {
    let llm =
        FakeLlm::start(vec![Reply::Text("Hi **Nelly**"), Reply::Text("Second answer"), Reply::Text("Third answer")])
            .await;
    let rest = Recorder::start(json!({"id": "1200", "channel_id": "1100"})).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = format!("ws://{}", listener.local_addr().unwrap());
    let settings = format!(
        "[skills.discord]\ngateway_url = \"{gw}/?v=10&encoding=json\"\napi_base = \"{}/api/v10\"\n\n\
         [channels.discord]\nallow = [\"80351110224678912\"]\n",
        rest.base
    );
    let env = Env::with_channel("discord", &llm.base, None, &settings, &[("DISCORD_TOKEN", TOKEN)]);
    env.ok(&["skills", "grant", "discord", "--http", &format!("{gw}/"), "--http", &format!("{}/api/v10/", rest.base)]);
    env.ok(&["skills", "grant", "discord", "--secret", "DISCORD_TOKEN"]);
    let _daemon = env.daemon();

    let mut conn = accept(&listener).await;
    assert_eq!(conn.path, "/?v=10&encoding=json");
    conn.send(hello());
    let identify = conn.expect_op(2).await;
    assert_eq!(identify["d"]["token"], TOKEN, "the host fills the token into the frame");
    assert_ne!(identify["d"]["intents"].as_u64().unwrap() & (1 << 15), 0, "MESSAGE_CONTENT intent");
    conn.send(json!({"op": 0, "s": 1, "t": "READY", "d": {
        "v": 10, "session_id": "sess-1", "resume_gateway_url": format!("{gw}/resume"),
        "user": {"id": "999", "username": "wasiclaw", "bot": true}
    }}));
    let beat = conn.expect_op(1).await;
    assert_eq!(beat["d"], 1, "the heartbeat carries the last sequence");

    conn.send(message(2, "1300", "hello from discord"));
    let sent = rest.wait("/api/v10/channels/1100/messages", 1).await;
    assert_eq!(sent[0].body["content"], "Hi **Nelly**");
    assert_eq!(sent[0].body["flags"], 4, "without SUPPRESS_EMBEDS Discord fetches links in a reply");
    assert_eq!(sent[0].body["allowed_mentions"], json!({"parse": []}), "a reply could ping @everyone");
    assert_eq!(sent[0].body["message_reference"]["message_id"], "1300");
    assert_eq!(sent[0].header("authorization"), Some(format!("Bot {TOKEN}").as_str()));
    assert!(!rest.wait("/api/v10/channels/1100/typing", 1).await.is_empty(), "typing… was shown");

    // Discord asks for a reconnect: the client resumes at the resume URL.
    conn.send(json!({"op": 7, "d": null}));
    let mut conn = accept(&listener).await;
    assert!(conn.path.starts_with("/resume"), "{}", conn.path);
    conn.send(hello());
    let resume = conn.expect_op(6).await;
    assert_eq!(resume["d"], json!({"token": TOKEN, "session_id": "sess-1", "seq": 2}));
    // The replayed dispatch is answered once; a new one is answered.
    conn.send(message(2, "1300", "hello from discord"));
    conn.send(json!({"op": 0, "s": 3, "t": "RESUMED", "d": {}}));
    conn.send(message(4, "1301", &format!("and again, my token is {TOKEN}")));
    let sent = rest.wait("/api/v10/channels/1100/messages", 2).await;
    assert_eq!(sent[1].body["content"], "Second answer");
    // A frame that echoes the token reaches the component (and so the model) scrubbed.
    let asked = llm.requests()[1]["messages"].to_string();
    assert!(asked.contains("and again") && !asked.contains(TOKEN), "{asked}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rest.wait("/messages", 2).await.len(), 2, "the replayed message was answered twice");
    assert_eq!(llm.requests().len(), 2);

    // In a server channel only a mention of the bot (known from READY,
    // kept across the resume) is answered.
    let in_guild = |mut m: Value| {
        m["d"]["guild_id"] = json!("4000");
        m
    };
    conn.send(in_guild(message(5, "1302", "anyone up for lunch?")));
    let mut mention = in_guild(message(6, "1303", "<@999> and you?"));
    mention["d"]["mentions"] = json!([{"id": "999", "username": "wasiclaw", "bot": true}]);
    conn.send(mention);
    let sent = rest.wait("/api/v10/channels/1100/messages", 3).await;
    assert_eq!(sent[2].body["content"], "Third answer");
    let asked = llm.requests();
    assert_eq!(asked.len(), 3);
    assert!(!asked[2]["messages"].to_string().contains("lunch"), "server chatter reached the model");

    // Heartbeats stop being acknowledged: the connection is a zombie and is replaced.
    conn.ack.store(false, Ordering::SeqCst);
    let mut conn = accept(&listener).await;
    conn.send(hello());
    assert_eq!(conn.expect_op(6).await["d"]["seq"], 6);
}

/// A gateway (or a channel) that asks for a reconnect as soon as each
/// connection opens is not hammered: quick reconnects back off as failures
/// do, so a loop cannot get the bot's token rate-limited or spin the board.
#[tokio::test(flavor = "multi_thread")]
async fn reconnects_asked_for_at_once_again_and_again_back_off() {
    let llm = FakeLlm::start(vec![]).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = format!("ws://{}", listener.local_addr().unwrap());
    let settings = format!(
        "[skills.discord]\ngateway_url = \"{gw}/?v=10&encoding=json\"\napi_base = \"{gw}/api/v10\"\n\n\
         [channels.discord]\nallow = [\"80351110224678912\"]\n"
    );
    let env = Env::with_channel("discord", &llm.base, None, &settings, &[("DISCORD_TOKEN", TOKEN)]);
    env.ok(&["skills", "grant", "discord", "--http", &format!("{gw}/"), "--secret", "DISCORD_TOKEN"]);
    let _daemon = env.daemon();
    let mut first = None;
    let mut connections = 0;
    loop {
        let wait = first.map_or(Duration::from_secs(20), |t: std::time::Instant| {
            Duration::from_secs(4).saturating_sub(t.elapsed())
        });
        let Ok(Ok((tcp, _))) = tokio::time::timeout(wait, listener.accept()).await else { break };
        first.get_or_insert_with(std::time::Instant::now);
        connections += 1;
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { continue };
        let _ = ws.send(Message::text(hello().to_string())).await;
        let _ = ws.send(Message::text(json!({"op": 7, "d": null}).to_string())).await;
        // Held open: the client leaves because it was asked to.
        tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    }
    assert!(first.is_some(), "the channel never connected");
    assert!(connections <= 4, "{connections} connections in 4 s");
}
