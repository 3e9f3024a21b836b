//! Outbound HTTP for components: the `wasi:http` send hook.
//!
//! Every request a component makes passes `authorize` before any socket is
//! opened. Invariants:
//! - Only a request matching an effective rule (scheme, host, port, path
//!   prefix, method) is sent; anything else fails with `HttpRequestDenied`
//!   and an audit record. No rules, no network.
//! - `{SECRET}` placeholders of the matched rule are substituted here, in
//!   the outgoing URL and headers only; the values are scrubbed from the
//!   response before the component sees it.
//! - A host name that resolves to a loopback, private, link-local or
//!   metadata address is refused unless the rule names that literal
//!   address. Plain-HTTP requests are pinned to the vetted address so a
//!   second DNS answer cannot differ (HTTPS is pinned by its certificate).
//! - Response bodies are capped.

use crate::engine::HostCtx;
use crate::grants::{EffectiveRule, UrlPattern};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use std::net::IpAddr;
use std::time::Duration;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks, default_send_request};

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendFuture = Box<dyn Future<Output = Result<(Response<WasiBody>, IoFuture), HttpError>> + Send>;

pub struct EgressHooks {
    host: HostCtx,
    response_cap: usize,
}

impl EgressHooks {
    pub fn new(host: HostCtx, response_cap: usize) -> Self {
        EgressHooks { host, response_cap }
    }
}

/// A request that passed every check, rewritten for sending.
#[derive(Debug)]
pub struct Authorized {
    pub uri: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Secret values put into the request, to scrub from the response.
    pub injected: Vec<String>,
}

/// Decide on one request. `Err` holds the denial text the owner reads.
pub async fn authorize(host: &HostCtx, method: &str, uri: &Uri) -> Result<Authorized, String> {
    let skill = &host.skill;
    let (scheme, authority) = match (uri.scheme_str(), uri.authority()) {
        (Some(s), Some(a)) => (s.to_ascii_lowercase(), a),
        _ => return Err("request has no scheme or host".into()),
    };
    if authority.as_str().contains('@') {
        return Err("credentials in the URL are not allowed; the host injects secrets".into());
    }
    let path = uri.path();
    if has_dot_segments(path) {
        return Err("path contains `.`/`..` segments or encoded slashes, which could escape a granted prefix".into());
    }
    let request = UrlPattern::parse(&format!("{scheme}://{authority}{}", unbrace(path))).map_err(|e| e.to_string())?;
    let grant_hint = format!("run `wasiclaw skills grant {skill} --http {}`", request.origin());
    if host.effective.http.is_empty() {
        return Err(format!("this skill has no network access; {grant_hint}"));
    }
    let covering: Vec<&EffectiveRule> = host.effective.http.iter().filter(|r| r.pattern.covers(&request)).collect();
    let Some(first) = covering.first() else {
        return Err(format!("not granted; {grant_hint}"));
    };
    // Prefer a rule that names the host over a wildcard: only a literal
    // rule may reach a private address.
    let Some(rule) = covering.iter().filter(|r| r.allows_method(method)).max_by_key(|r| !r.pattern.is_wildcard_host())
    else {
        return Err(format!(
            "method {method} not granted for {} (granted: {}); run `wasiclaw skills grant {skill} --http {},{method}`",
            first.pattern.origin(),
            first.methods.join(","),
            first.pattern.origin()
        ));
    };
    let secrets = rule_secrets(host, rule)?;
    let addr = vet_address(rule, &request).await?;

    // Substitute placeholders in path and query; percent-encode values so a
    // secret cannot change the URL's structure.
    let mut path_and_query = uri.path_and_query().map(|p| unbrace(p.as_str())).unwrap_or_else(|| "/".into());
    for (name, value) in &secrets {
        path_and_query = path_and_query.replace(&format!("{{{name}}}"), &percent_encode(value));
    }
    let port = request.port.unwrap_or_default();
    let authority = match addr {
        Some(ip) if scheme == "http" || scheme == "ws" => match ip {
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            IpAddr::V4(v4) => format!("{v4}:{port}"),
        },
        _ => authority.to_string(),
    };
    let uri = Uri::builder()
        .scheme(scheme.as_str())
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| format!("cannot build the request URL: {e}"))?;
    let mut headers = Vec::new();
    for (name, template) in &rule.headers {
        let mut value = template.clone();
        for (secret, secret_value) in &secrets {
            value = value.replace(&format!("{{{secret}}}"), secret_value);
        }
        let name = HeaderName::try_from(name.as_str()).map_err(|_| format!("bad header name `{name}` in rule"))?;
        let value = HeaderValue::try_from(value).map_err(|_| format!("header `{name}` would not be a valid value"))?;
        headers.push((name, value));
    }
    Ok(Authorized { uri, headers, injected: secrets.into_iter().map(|(_, v)| v).collect() })
}

/// The secrets a rule substitutes: each must be granted and set.
fn rule_secrets(host: &HostCtx, rule: &EffectiveRule) -> Result<Vec<(String, String)>, String> {
    let mut names = crate::grants::placeholders(&rule.pattern.path);
    names.extend(rule.headers.iter().flat_map(|(_, v)| crate::grants::placeholders(v)));
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        if !host.effective.secrets.contains(&name) {
            return Err(format!(
                "secret {name} is not granted to this skill; run `wasiclaw skills grant {} --secret {name}`",
                host.skill
            ));
        }
        match host.secrets.get(&name) {
            Ok(Some(value)) => out.push((name, value)),
            Ok(None) => return Err(format!("secret {name} is not set; run `wasiclaw secrets set {name}`")),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}

/// Refuse non-public destinations unless the rule names the literal address.
/// Returns the vetted address of a looked-up host name.
async fn vet_address(rule: &EffectiveRule, request: &UrlPattern) -> Result<Option<IpAddr>, String> {
    if let Ok(ip) = request.host.parse::<IpAddr>() {
        if is_public(ip) || rule.pattern.host == request.host {
            return Ok(None);
        }
        return Err(format!(
            "{ip} is a private or loopback address; grant it by literal address to allow it, e.g. --http {}",
            request.origin()
        ));
    }
    let lookup = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::lookup_host((request.host.as_str(), request.port.unwrap_or_default())),
    );
    let addrs: Vec<IpAddr> = match lookup.await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        Ok(Err(e)) => return Err(format!("cannot resolve {}: {e}", request.host)),
        Err(_) => return Err(format!("resolving {} timed out", request.host)),
    };
    if let Some(bad) = addrs.iter().find(|ip| !is_public(**ip)) {
        return Err(format!(
            "{} resolves to the non-public address {bad}; to reach a LAN or loopback service grant it by literal address",
            request.host
        ));
    }
    addrs.first().copied().map(Some).ok_or_else(|| format!("{} has no addresses", request.host))
}

/// Globally routable unicast, by the IANA special-purpose registries.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && v4.octets()[2] == 0))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            if seg[0] == 0x64 && seg[1] == 0xff9b {
                let o = v6.octets();
                return is_public(IpAddr::V4([o[12], o[13], o[14], o[15]].into()));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || seg[0] == 0x2001 && seg[1] == 0xdb8)
        }
    }
}

/// Guests may send `{NAME}` percent-encoded; match rules on the braces.
fn unbrace(s: &str) -> String {
    s.replace("%7B", "{").replace("%7b", "{").replace("%7D", "}").replace("%7d", "}")
}

fn has_dot_segments(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains('\\')
        || lower.split('/').any(|seg| matches!(seg.replace("%2e", ".").as_str(), "." | ".."))
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Replace every occurrence of each secret (raw and percent-encoded).
pub fn redact(bytes: &[u8], secrets: &[String]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for secret in secrets {
        for needle in [secret.clone(), percent_encode(secret)] {
            if needle.is_empty() {
                continue;
            }
            let needle = needle.as_bytes();
            let mut result = Vec::with_capacity(out.len());
            let mut i = 0;
            while i < out.len() {
                if out[i..].starts_with(needle) {
                    result.extend_from_slice(b"[REDACTED]");
                    i += needle.len();
                } else {
                    result.push(out[i]);
                    i += 1;
                }
            }
            out = result;
        }
    }
    out
}

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        mut request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let host = self.host.clone();
        let cap = self.response_cap;
        Box::new(async move {
            let method = request.method().as_str().to_string();
            let target = format!("{method} {}", unbrace(&request.uri().to_string()));
            let authorized = match authorize(&host, &method, request.uri()).await {
                Ok(a) => a,
                Err(reason) => {
                    tracing::info!(skill = %host.skill, "denied http {target}: {reason}");
                    host.audit("http", &target, false, &reason);
                    return Err(HttpError::HttpRequestDenied);
                }
            };
            host.audit("http", &target, true, "");
            *request.uri_mut() = authorized.uri;
            for (name, value) in authorized.headers {
                request.headers_mut().insert(name, value);
            }
            let mut options = options.unwrap_or_default();
            options.connect_timeout.get_or_insert(Duration::from_secs(10));
            let (response, io) = default_send_request(request, Some(options)).await?;
            // Buffer the body (capped) so secrets split across chunks are
            // scrubbed too; the connection is driven meanwhile.
            let io = tokio::spawn(io);
            let (mut parts, mut body) = response.into_parts();
            let mut buf = Vec::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    if buf.len() + data.len() > cap {
                        io.abort();
                        return Err(HttpError::HttpResponseBodySize(Some(cap as u64)));
                    }
                    buf.extend_from_slice(&data);
                }
            }
            let scrubbed = redact(&buf, &authorized.injected);
            for value in parts.headers.values_mut() {
                let clean = redact(value.as_bytes(), &authorized.injected);
                if clean != value.as_bytes() {
                    *value = HeaderValue::from_bytes(&clean).unwrap_or(HeaderValue::from_static("[REDACTED]"));
                }
            }
            parts.headers.remove(http::header::CONTENT_LENGTH);
            let body = Full::new(Bytes::from(scrubbed)).map_err(|never| match never {}).boxed_unsync();
            let io: IoFuture = Box::new(async move { io.await.unwrap_or(Ok(())) });
            Ok((Response::from_parts(parts, body), io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must count as non-public");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn dot_segments_and_redaction() {
        assert!(has_dot_segments("/v1/../admin"));
        assert!(has_dot_segments("/v1/%2E%2e/admin"));
        assert!(has_dot_segments("/v1%2Fadmin"));
        assert!(!has_dot_segments("/v1/a.b/c"));
        assert_eq!(redact(b"k=s3 cr&t s3 cr", &["s3 cr".into()]), b"k=[REDACTED]&t [REDACTED]".to_vec());
        assert_eq!(redact(b"x=s3%20cr", &["s3 cr".into()]), b"x=[REDACTED]".to_vec());
    }
}
