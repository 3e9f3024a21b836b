//! Outbound HTTP for components: the `wasi:http` send hook, and the one
//! way the host connects anywhere on a component's behalf (channel
//! websockets use `connect` too).
//!
//! Invariants:
//! - Every request passes `policy::decide` before any socket is opened;
//!   a refusal is `HttpRequestDenied` for the guest and an audit record
//!   with the typed denial's text. No rules, no network.
//! - The name is resolved once, every address is checked, and the
//!   connection goes to that vetted address for HTTP, HTTPS, WS and WSS
//!   alike (the name kept for SNI and the certificate check), so a second
//!   DNS answer can never differ. A failed TLS handshake is audited as such.
//! - The `Host` header is the granted name's: wasmtime's forbidden headers
//!   (kept, not overridden) refuse a guest's own, which would reach another
//!   site behind the same address.
//! - Request bodies and response bodies are capped; responses are
//!   buffered so a secret split across chunks is scrubbed too, and a call
//!   keeps at most `[limits] http_open` requests open (a request holds its
//!   place until its response is dropped). An unsent request body buffers
//!   at most [`HELD_BYTES`].

use crate::context::HostCtx;
use crate::policy::{self, Decision, Denial};
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendFuture = Box<dyn Future<Output = Result<(Response<WasiBody>, IoFuture), HttpError>> + Send>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most one HTTP handle holds in the host: a header map's total size
/// (`engine.rs` sets it), and what an unsent request body buffers.
pub const HELD_BYTES: usize = 16 << 10;

/// The `wasi:http` hook of one call: every request goes through `authorize`.
pub struct EgressHooks {
    host: HostCtx,
    /// Places for requests kept open at once.
    open: Arc<tokio::sync::Semaphore>,
}

impl EgressHooks {
    /// The hooks of the call `host`.
    pub fn new(host: HostCtx) -> Self {
        let open = Arc::new(tokio::sync::Semaphore::new(host.limits.http_open as usize));
        EgressHooks { host, open }
    }
}

/// A request that passed every check: the rewritten request and the
/// vetted address to connect to.
#[derive(Debug)]
pub struct Authorized {
    /// What the policy decided.
    pub decision: Decision,
    /// The vetted address to connect to.
    pub addr: SocketAddr,
}

/// Decide on one request and vet its destination.
pub async fn authorize(host: &HostCtx, method: &str, uri: &Uri) -> Result<Authorized, Denial> {
    let decision = policy::decide(&host.skill, &host.effective, &host.secrets, method, uri)?;
    let ips = match decision.host.parse() {
        Ok(ip) => vec![ip],
        Err(_) => {
            let lookup = tokio::time::timeout(CONNECT_TIMEOUT, (host.resolver)(decision.host.clone(), decision.port));
            let resolve = |message: String| Denial::Resolve { host: decision.host.clone(), message };
            match lookup.await {
                Ok(Ok(ips)) if ips.is_empty() => return Err(resolve("no addresses".into())),
                Ok(Ok(ips)) => ips,
                Ok(Err(e)) => return Err(resolve(e.to_string())),
                Err(_) => return Err(resolve("timed out".into())),
            }
        }
    };
    for ip in &ips {
        policy::check_address(&decision, *ip)?;
    }
    let addr = SocketAddr::new(ips[0], decision.port);
    Ok(Authorized { decision, addr })
}

/// A TCP connection to the vetted address, with TLS for `https`/`wss`
/// checked against the request's host name.
pub async fn connect(authorized: &Authorized) -> Result<Box<dyn Stream>, HttpError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authorized.addr))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Connect)?;
    if !matches!(authorized.decision.uri.scheme_str(), Some("https" | "wss")) {
        return Ok(Box::new(stream));
    }
    static TLS: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();
    let connector = TLS.get_or_init(|| {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
        let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    });
    let host = &authorized.decision.host;
    let name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => {
            rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| HttpError::HttpRequestUriInvalid)?
        }
    };
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Tls)?;
    Ok(Box::new(tls))
}

/// A byte stream the host speaks HTTP or websockets over.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T> Stream for T where T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

/// Read a body whole, failing once it passes `cap` bytes.
async fn collect<B>(mut body: B, cap: usize, over: HttpError) -> Result<Bytes, HttpError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    HttpError: From<B::Error>,
{
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > cap {
                return Err(over);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.into())
}

/// Send an authorized request and read the response, capped.
async fn send(
    host: &HostCtx,
    request: Request<WasiBody>,
    authorized: &Authorized,
    target: &str,
    options: Option<RequestOptions>,
) -> Result<Response<Bytes>, HttpError> {
    let (mut parts, body) = request.into_parts();
    let request_cap = host.limits.http_request_bytes();
    let body = collect(body, request_cap, HttpError::HttpRequestBodySize(Some(request_cap as u64))).await?;
    parts.uri = Uri::builder()
        .path_and_query(authorized.decision.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    for (name, value) in &authorized.decision.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    // A compressed answer cannot be scrubbed, nor a secret echoed back a
    // byte range at a time: a request carrying one asks for neither,
    // whatever the guest asked for.
    if !authorized.decision.secrets.is_empty() {
        parts.headers.insert(http::header::ACCEPT_ENCODING, http::HeaderValue::from_static("identity"));
        parts.headers.remove(http::header::RANGE);
        parts.headers.remove(http::header::IF_RANGE);
    }
    let stream = match connect(authorized).await {
        Err(HttpError::Tls(e)) => {
            host.audit("http", target, false, &format!("TLS handshake failed: {e}"));
            return Err(HttpError::Tls(e));
        }
        other => other?,
    };
    let io = wasmtime_wasi_http::io::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(conn);
    let first_byte = options.and_then(|o| o.first_byte_timeout).unwrap_or(host.limits.timeout());
    let response = tokio::time::timeout(first_byte, sender.send_request(Request::from_parts(parts, Full::new(body))))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
    let (parts, incoming) = response.into_parts();
    let cap = host.limits.http_response_bytes();
    let body = collect(incoming, cap, HttpError::HttpResponseBodySize(Some(cap as u64))).await;
    driver.abort();
    Ok(Response::from_parts(parts, body?))
}

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let host = self.host.clone();
        let place = self.open.clone().try_acquire_owned();
        Box::new(async move {
            let method = request.method().as_str().to_string();
            let target = format!("{method} {}", policy::unbrace(&request.uri().to_string()));
            let Ok(place) = place else {
                let limit = host.limits.http_open;
                let why =
                    format!("the call already keeps {limit} requests open ([limits] http_open); drop a response first");
                host.audit("http", &target, false, &why);
                return Err(HttpError::HttpRequestDenied);
            };
            let authorized = match authorize(&host, &method, request.uri()).await {
                Ok(a) => a,
                Err(denial) => {
                    tracing::info!(skill = %host.skill, "denied http {target}: {denial}");
                    host.audit("http", &target, false, &denial.to_string());
                    return Err(HttpError::HttpRequestDenied);
                }
            };
            host.audit("http", &target, true, &format!("to {}", authorized.addr));
            let (mut parts, body) = send(&host, request, &authorized, &target, options).await?.into_parts();
            let injected = authorized.decision.injected();
            let coding =
                parts.headers.get(http::header::CONTENT_ENCODING).map(|v| String::from_utf8_lossy(v.as_bytes()));
            if let Some(coding) = coding.filter(|c| !injected.is_empty() && !c.trim().eq_ignore_ascii_case("identity"))
            {
                let why =
                    format!("the answer came encoded ({coding}) though identity was asked for; it cannot be scrubbed");
                host.audit("http", &target, false, &why);
                return Err(HttpError::HttpResponseContentCoding(Some(coding.into_owned())));
            }
            let scrubbed = crate::redact::redact(&body, &injected);
            crate::redact::redact_headers(&mut parts.headers, &injected);
            parts.headers.remove(http::header::CONTENT_LENGTH);
            // The buffered body holds the request's place until it is dropped.
            let body = Full::new(Bytes::from(scrubbed))
                .map_err(|never| match never {})
                .map_frame(move |frame| {
                    let _held = &place;
                    frame
                })
                .boxed_unsync();
            let io: IoFuture = Box::new(async { Ok(()) });
            Ok((Response::from_parts(parts, body), io))
        })
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        HELD_BYTES
    }
}
