//! The egress decision, pure: effective rights, a secret source, a method
//! and a URL in; a rewritten request or a typed denial out. No I/O, so a
//! decision is tested without a database, a guest or a network.
//!
//! Invariants:
//! - A secret goes only where the owner's rule puts it. The outgoing path
//!   is the matched rule's path template with its placeholders filled,
//!   followed by the guest's remainder after that prefix; a `{NAME}` of a
//!   granted secret in the remainder (raw or percent-encoded, however many
//!   times) is a denial, never a substitution. Header templates are set by
//!   the host and override the guest's headers of the same name.
//! - Only global unicast addresses count as public; an IPv6 address that
//!   embeds an IPv4 one is judged as that IPv4 address. Link-local and
//!   cloud-metadata addresses are refused even to a literal rule, and no
//!   denial text suggests granting them.
//! - Paths with `.`/`..` segments in any encoding, also before a `;`
//!   parameter, or with encoded slashes, are refused.

use crate::grants::{Effective, EffectiveRule, UrlPattern, grant_advice, placeholders};
use http::{HeaderName, HeaderValue, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where the decision reads secret values.
pub trait SecretSource {
    /// The value of secret `name`, if set.
    fn secret(&self, name: &str) -> Result<Option<String>, String>;
}

impl SecretSource for crate::secrets::Secrets {
    fn secret(&self, name: &str) -> Result<Option<String>, String> {
        self.get(name).map_err(|e| e.to_string())
    }
}

/// Why a request was refused. `Display` is the text the owner (and the
/// guest) reads, with the command that would allow it where one exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No scheme or host.
    #[error("request has no scheme or host")]
    BadUrl,
    /// User info in the URL.
    #[error("credentials in the URL are not allowed; the host injects secrets")]
    Credentials,
    #[error(
        "path contains `.`/`..` segments (also before `;`) or encoded slashes, which could escape a granted prefix"
    )]
    /// Dot segments or encoded slashes in the path.
    DotSegments,
    /// A pattern the rule cannot match.
    #[error("{0}")]
    Pattern(String),
    #[error("this skill has no network access; {}", grant_advice(.skill, &format!("--http {}", .origin)))]
    /// No HTTP rule is granted at all.
    NoNetwork {
        /// The component.
        skill: String,
        /// The origin asked for.
        origin: String,
    },
    #[error("not granted; {}", grant_advice(.skill, &format!("--http {}", .origin)))]
    /// No granted rule covers the URL.
    NotGranted {
        /// The component.
        skill: String,
        /// The origin asked for.
        origin: String,
    },
    #[error(
        "method {method} not granted for {origin} (granted: {granted}); {}",
        grant_advice(.skill, &format!("--http {},{}", .origin, .method))
    )]
    /// The rule does not allow the method.
    MethodNotGranted {
        /// The component.
        skill: String,
        /// The method asked for.
        method: String,
        /// The origin asked for.
        origin: String,
        /// The methods granted.
        granted: String,
    },
    #[error("secret {name} is not granted to this skill; {}", grant_advice(.skill, &format!("--secret {}", .name)))]
    /// The rule names a secret that is not granted.
    SecretNotGranted {
        /// The component.
        skill: String,
        /// The secret.
        name: String,
    },
    #[error("secret {name} is not set; run `wasiclaw secrets set {name}`")]
    /// A granted secret has no value.
    SecretNotSet {
        /// The secret.
        name: String,
    },
    #[error("cannot read secret {name}: {message}")]
    /// The secret store cannot be read.
    SecretUnreadable {
        /// The secret.
        name: String,
        /// Why.
        message: String,
    },
    #[error(
        "secret {name} may only go where its rule puts it ({template}); the request names it elsewhere, so it is refused"
    )]
    /// A secret placeholder outside the place its rule gives it.
    SecretMisplaced {
        /// The secret.
        name: String,
        /// The rule's template.
        template: String,
    },
    /// The host resolves to an address components may not reach.
    #[error("{0}")]
    NonPublicAddress(NonPublic),
    #[error("cannot resolve {host}: {message}")]
    /// The host's name does not resolve.
    Resolve {
        /// The host.
        host: String,
        /// Why.
        message: String,
    },
    /// A rule's header is not a valid header.
    #[error("rule header `{0}` is not a valid header")]
    BadHeader(String),
}

/// A non-public destination, and whether granting it is possible at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonPublic {
    /// The host as asked for.
    pub host: String,
    /// The address it resolved to.
    pub ip: IpAddr,
    /// `--http URL` that would allow it; `None` for link-local and
    /// cloud-metadata addresses, which are never granted.
    pub grant: Option<String>,
}

impl std::fmt::Display for NonPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.host == self.ip.to_string() {
            format!("{} is a private or loopback address", self.ip)
        } else {
            format!("{} resolves to the non-public address {}", self.host, self.ip)
        };
        match &self.grant {
            Some(url) if self.host == self.ip.to_string() => {
                write!(f, "{what}; grant it by literal address to allow it, e.g. --http {url}")
            }
            Some(_) => write!(f, "{what}; to reach a LAN or loopback service grant it by literal address"),
            None => write!(f, "{what}; link-local and cloud-metadata addresses are never reachable from a component"),
        }
    }
}

/// A request that passed the rule checks, rewritten for sending. The
/// destination address is checked separately (`check_address`), once it
/// is known.
#[derive(Debug)]
pub struct Decision {
    /// The URL to send to.
    pub uri: Uri,
    /// The headers to send.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The secrets the matched rule names, with their values: they were
    /// put into this request, they are scrubbed from the response, and a
    /// websocket opened by this rule may carry them in its frames.
    pub secrets: Vec<(String, String)>,
    /// The host to connect to.
    pub host: String,
    /// The port to connect to.
    pub port: u16,
    /// Whether the rule names the host literally (not by wildcard): only
    /// then may a literal private address be reached.
    pub literal_rule: bool,
}

impl Decision {
    /// The secrets the host put into the request.
    pub fn injected(&self) -> Vec<String> {
        self.secrets.iter().map(|(_, v)| v.clone()).collect()
    }
}

/// Characters left as they are when a secret is put into a URL: the
/// unreserved set, so a value can never change the URL's structure.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, VALUE).to_string()
}

/// Decide on one request of `skill` under `rights`.
pub fn decide(
    skill: &str,
    rights: &Effective,
    secrets: &dyn SecretSource,
    method: &str,
    uri: &Uri,
) -> Result<Decision, Denial> {
    let (scheme, authority) = match (uri.scheme_str(), uri.authority()) {
        (Some(s), Some(a)) => (s.to_ascii_lowercase(), a),
        _ => return Err(Denial::BadUrl),
    };
    if authority.as_str().contains('@') {
        return Err(Denial::Credentials);
    }
    if has_dot_segments(uri.path()) {
        return Err(Denial::DotSegments);
    }
    let path = unbrace(uri.path());
    let request =
        UrlPattern::parse(&format!("{scheme}://{authority}{path}")).map_err(|e| Denial::Pattern(e.to_string()))?;
    let origin = request.origin();
    if rights.http.is_empty() {
        return Err(Denial::NoNetwork { skill: skill.into(), origin });
    }
    let covering: Vec<&EffectiveRule> = rights.http.iter().filter(|r| r.pattern.covers(&request)).collect();
    let Some(first) = covering.first() else {
        return Err(Denial::NotGranted { skill: skill.into(), origin });
    };
    // Prefer a rule that names the host over a wildcard: only a literal
    // rule may reach a private address.
    let Some(rule) = covering.iter().filter(|r| r.allows_method(method)).max_by_key(|r| !r.pattern.is_wildcard_host())
    else {
        return Err(Denial::MethodNotGranted {
            skill: skill.into(),
            method: method.into(),
            origin: first.pattern.origin(),
            granted: first.methods.join(","),
        });
    };
    let values = rule_secrets(skill, rights, secrets, rule)?;

    // The template's prefix, filled; then the guest's remainder, which
    // must not name a granted secret in any encoding.
    let path_and_query = uri.path_and_query().map(|p| unbrace(p.as_str())).unwrap_or_else(|| "/".into());
    let remainder = path_and_query.get(rule.pattern.path.len()..).unwrap_or_default();
    for form in decodings(remainder) {
        if let Some(name) = placeholders(&form).into_iter().find(|n| rights.secrets.contains(n)) {
            return Err(Denial::SecretMisplaced { name, template: rule_template(rule) });
        }
    }
    let mut prefix = rule.pattern.path.clone();
    for (name, value) in &values {
        prefix = prefix.replace(&format!("{{{name}}}"), &percent_encode(value));
    }
    let uri = Uri::builder()
        .scheme(scheme.as_str())
        .authority(authority.as_str())
        .path_and_query(format!("{prefix}{remainder}"))
        .build()
        .map_err(|e| Denial::Pattern(format!("cannot build the request URL: {e}")))?;
    let mut headers = Vec::new();
    for (name, template) in &rule.headers {
        let mut value = template.clone();
        for (secret, secret_value) in &values {
            value = value.replace(&format!("{{{secret}}}"), secret_value);
        }
        let header = HeaderName::try_from(name.as_str()).map_err(|_| Denial::BadHeader(name.clone()))?;
        let value = HeaderValue::try_from(value).map_err(|_| Denial::BadHeader(name.clone()))?;
        headers.push((header, value));
    }
    Ok(Decision {
        uri,
        headers,
        secrets: values,
        host: request.host,
        port: request.port.unwrap_or_default(),
        literal_rule: !rule.pattern.is_wildcard_host(),
    })
}

/// Check one destination address of a decided request.
pub fn check_address(decision: &Decision, ip: IpAddr) -> Result<(), Denial> {
    let literal = decision.host.parse::<IpAddr>().ok();
    let grantable = !never_reachable(ip);
    // A literal private address is allowed when the rule names it.
    if grantable && (is_public(ip) || (literal == Some(ip) && decision.literal_rule)) {
        return Ok(());
    }
    let scheme = decision.uri.scheme_str().unwrap_or("http");
    let host = if decision.host.contains(':') { format!("[{}]", decision.host) } else { decision.host.clone() };
    Err(Denial::NonPublicAddress(NonPublic {
        host: decision.host.clone(),
        ip,
        grant: grantable.then(|| format!("{scheme}://{host}:{}/", decision.port)),
    }))
}

fn rule_template(rule: &EffectiveRule) -> String {
    let mut out = format!("{}{}", rule.pattern.origin().trim_end_matches('/'), rule.pattern.path);
    for (name, value) in &rule.headers {
        out.push_str(&format!(", header {name}: {value}"));
    }
    out
}

/// The secrets a rule substitutes: each must be granted and set.
fn rule_secrets(
    skill: &str,
    rights: &Effective,
    secrets: &dyn SecretSource,
    rule: &EffectiveRule,
) -> Result<Vec<(String, String)>, Denial> {
    let mut names = placeholders(&rule.pattern.path);
    names.extend(rule.headers.iter().flat_map(|(_, v)| placeholders(v)));
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        if !rights.secrets.contains(&name) {
            return Err(Denial::SecretNotGranted { skill: skill.into(), name });
        }
        match secrets.secret(&name) {
            Ok(Some(value)) => out.push((name, value)),
            Ok(None) => return Err(Denial::SecretNotSet { name }),
            Err(message) => return Err(Denial::SecretUnreadable { name, message }),
        }
    }
    Ok(out)
}

/// `s` and its percent-decodings, until decoding changes nothing.
fn decodings(s: &str) -> Vec<String> {
    let mut forms = vec![s.to_string()];
    while forms.len() < 8 {
        let last = forms.last().expect("one form at least");
        let next = percent_decode_str(last).decode_utf8_lossy().replace('+', " ");
        if &next == last {
            break;
        }
        forms.push(next);
    }
    forms
}

/// Guests may send `{NAME}` percent-encoded; match rules on the braces.
pub fn unbrace(s: &str) -> String {
    s.replace("%7B", "{").replace("%7b", "{").replace("%7D", "}").replace("%7d", "}")
}

/// Whether a path has `.` or `..` segments, raw or encoded, or encoded slashes.
pub fn has_dot_segments(path: &str) -> bool {
    path.contains('\\')
        || path.split('/').any(|segment| {
            decodings(segment).iter().any(|form| {
                let before_params = form.split(';').next().unwrap_or_default();
                form.contains(['/', '\\']) || matches!(before_params, "." | "..")
            })
        })
}

/// Link-local and cloud-metadata addresses: never reachable, whatever the
/// grant says.
pub fn never_reachable(ip: IpAddr) -> bool {
    match embedded_v4(ip) {
        Some(v4) => {
            v4.is_link_local() || v4 == Ipv4Addr::new(100, 100, 100, 200) || v4 == Ipv4Addr::new(192, 0, 0, 192)
        }
        None => {
            let IpAddr::V6(v6) = ip else { unreachable!("v4 addresses are embedded in themselves") };
            (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == "fd00:ec2::254".parse::<Ipv6Addr>().expect("literal")
        }
    }
}

/// The IPv4 address an address stands for: itself, or the one an IPv6
/// form embeds (mapped, compatible, translated, NAT64, 6to4, Teredo).
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let v6 = match ip {
        IpAddr::V4(v4) => return Some(v4),
        IpAddr::V6(v6) => v6,
    };
    let s = v6.segments();
    let o = v6.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // ::a.b.c.d (compatible; not :: or ::1), ::ffff:a.b.c.d (mapped),
        // ::ffff:0:a.b.c.d (translated)
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(last),
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(last),
        // NAT64, well-known prefix
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last),
        // 6to4: 2002:AABB:CCDD::/48
        [0x2002, a, b, ..] => Some(Ipv4Addr::from(((a as u32) << 16) | b as u32)),
        // Teredo: the client address is the last 32 bits, inverted
        [0x2001, 0, ..] => Some(Ipv4Addr::from(!u32::from(last))),
        _ => None,
    }
}

/// Globally routable unicast, by the IANA special-purpose registries.
pub fn is_public(ip: IpAddr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        if let IpAddr::V6(v6) = ip {
            // Teredo also names its server; both must be public.
            let s = v6.segments();
            if s[0] == 0x2001
                && s[1] == 0
                && !is_public(IpAddr::V4(Ipv4Addr::from(((s[2] as u32) << 16) | s[3] as u32)))
            {
                return false;
            }
        }
        let [a, b, c, _] = v4.octets();
        return !(v4.is_loopback()
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
            || (a == 192 && b == 0 && c == 0)
            || (a == 192 && b == 88 && c == 99));
    }
    let IpAddr::V6(v6) = ip else { return false };
    let s = v6.segments();
    // 2000::/3 only, without documentation (2001:db8::/32, 3fff::/20) and
    // the IETF protocol block 2001::/23 (Teredo is handled above).
    (s[0] & 0xe000) == 0x2000 && !(s[0] == 0x2001 && (s[1] < 0x200 || s[1] == 0xdb8)) && (s[0] & 0xfff0) != 0x3ff0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_global_unicast_is_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::7f00:1",
            "::ffff:0:7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::",
            "2002:a00:1::5",
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo, client 127.0.0.1
            "2001:db8::1",
            "3fff::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must count as non-public");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:1.1.1.1", "2002:101:101::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn link_local_and_metadata_are_never_reachable() {
        for ip in ["169.254.169.254", "::ffff:169.254.169.254", "fe80::1", "fd00:ec2::254", "100.100.100.200"] {
            assert!(never_reachable(ip.parse().unwrap()), "{ip}");
        }
        assert!(!never_reachable("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn dot_segments_in_every_encoding() {
        for path in [
            "/v1/../admin",
            "/v1/%2E%2e/admin",
            "/v1%2Fadmin",
            "/api/..;/admin",
            "/api/.;x=1/admin",
            "/api/%2e%2e;/admin",
            "/api/%252e%252e/admin",
            "/api/a%5cb",
        ] {
            assert!(has_dot_segments(path), "{path}");
        }
        assert!(!has_dot_segments("/v1/a.b/c;v=1"));
    }
}
