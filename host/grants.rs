//! Capabilities: what a component requests, what the owner grants, and the
//! effective rights (requested ∩ granted) the host enforces.
//!
//! Invariants:
//! - Empty means deny: no grant record, no rights.
//! - Grants are bound to the component's sha256. A changed component keeps
//!   only rights for items its previous approved version also requested;
//!   anything new stays pending until the owner grants again.
//! - URL patterns are matched structurally (scheme, host, port, path
//!   prefix on a segment boundary), never as plain string prefixes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// An HTTP rule as requested in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRule {
    /// Scheme, host, optional port and path prefix; `{SECRET}` placeholders.
    pub url: String,
    /// Upper-case; empty means GET only.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Headers the host sets, `{SECRET}` placeholders substituted.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// Requested capabilities, mirrored from the WIT `capabilities` record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// HTTP rules.
    #[serde(default)]
    pub http: Vec<HttpRule>,
    /// Secrets used by name through `crypto`.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The rights held or not.
    #[serde(flatten)]
    pub rights: Rights,
}

/// The rights that are held or not (the WIT `rights` flags), as a set.
/// Stored and shown as one boolean per right (`"kv": true`), the shape
/// grant records have always had.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rights(u8);

impl Rights {
    /// Key-value storage.
    pub const KV: Rights = Rights(1);
    /// Messages to the owner.
    pub const NOTIFY: Rights = Rights(2);
    /// A private directory.
    pub const FILES: Rights = Rights(4);
    /// Searching long-term memory.
    pub const MEMORY_READ: Rights = Rights(8);
    /// Saving to long-term memory.
    pub const MEMORY_WRITE: Rights = Rights(16);
    /// Every right: its command-line flag and what it lets a component do.
    pub const ALL: [(Rights, &'static str, &'static str); 5] = [
        (Rights::KV, "kv", "Its own key-value store"),
        (Rights::NOTIFY, "notify", "Sending you messages"),
        (Rights::FILES, "files", "A private directory, seen by the component as /data"),
        (Rights::MEMORY_READ, "memory-read", "Searching your long-term memory"),
        (Rights::MEMORY_WRITE, "memory-write", "Saving to your long-term memory"),
    ];

    /// Whether every right in `other` is held.
    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the rights held, in table order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Rights::ALL.into_iter().filter(move |(r, ..)| self.contains(*r)).map(|(_, name, _)| name)
    }

    /// The right with this flag name (`memory-read` or `memory_read`).
    pub fn named(name: &str) -> Option<Rights> {
        Rights::ALL.into_iter().find(|(_, n, _)| n.replace('-', "_") == name.replace('-', "_")).map(|(r, ..)| r)
    }
}

impl std::ops::BitOr for Rights {
    type Output = Rights;
    fn bitor(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for Rights {
    fn bitor_assign(&mut self, other: Rights) {
        self.0 |= other.0;
    }
}

impl std::ops::BitAnd for Rights {
    type Output = Rights;
    fn bitand(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }
}

impl std::ops::Sub for Rights {
    type Output = Rights;
    fn sub(self, other: Rights) -> Rights {
        Rights(self.0 & !other.0)
    }
}

impl Serialize for Rights {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(Rights::ALL.len()))?;
        for (right, name, _) in Rights::ALL {
            map.serialize_entry(&name.replace('-', "_"), &self.contains(right))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Rights {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Rights;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of rights to booleans")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Rights, A::Error> {
                let mut rights = Rights::default();
                // Flattened: the other fields of the record pass by too.
                while let Some(key) = map.next_key::<String>()? {
                    match Rights::named(&key) {
                        Some(right) if map.next_value::<bool>()? => rights |= right,
                        Some(_) => {}
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(rights)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// An HTTP rule granted by the owner; `methods` holds `*` for any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedRule {
    /// The URL pattern.
    pub url: String,
    /// Upper-case methods, or `*`.
    pub methods: Vec<String>,
}

/// What the owner granted, as stored in redb.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSet {
    /// HTTP rules granted.
    pub http: Vec<GrantedRule>,
    /// Secrets granted.
    pub secrets: BTreeSet<String>,
    /// Rights granted.
    #[serde(flatten)]
    pub rights: Rights,
}

/// The stored grant of one skill: the rights, the sha256 of the component
/// they were given to, and what that version requested (what the owner saw).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// The build the rights were approved for.
    pub sha256: String,
    /// What that build asked for.
    pub approved: Capabilities,
    /// What the owner granted.
    pub granted: GrantSet,
    /// The owner opted in: a changed build keeps the rights its previous
    /// version also asked for without a new approval.
    #[serde(default)]
    pub carry_over: bool,
    /// A script skill's source as approved, for `skills diff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A change asked for by `wasiclaw skills grant|revoke`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantChange {
    /// The rights to grant or take back.
    #[serde(flatten)]
    pub rights: GrantSet,
    /// grant: everything requested; revoke: everything.
    pub all: bool,
    /// Set or clear automatic carry-over of rights to changed builds.
    #[serde(default)]
    pub carry_over: Option<bool>,
}

/// Why a URL pattern is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    /// Not http(s) or ws(s).
    #[error("`{0}`: URL must start with https:// or http:// (wss:// or ws:// for a channel websocket)")]
    Scheme(String),
    /// No host.
    #[error("`{0}`: URL has no host")]
    NoHost(String),
    /// A port that is not a number.
    #[error("`{0}`: bad port")]
    Port(String),
    /// An HTTP method nobody uses.
    #[error("`{0}`: unknown HTTP method `{1}`")]
    Method(String, String),
    /// Characters an owner could misread.
    #[error(
        "`{0}`: a URL pattern is visible ASCII, with no spaces or control characters, and an international \
         host is written in its xn-- form"
    )]
    Chars(String),
}

/// A parsed URL pattern: `scheme://host[:port]/path-prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPattern {
    /// `https`, `http`, `wss` or `ws`.
    pub scheme: String,
    /// Lower-case; may be `*` or `*.example.com`.
    pub host: String,
    /// `None` only for a pattern written with `:*` (any port).
    pub port: Option<u16>,
    /// The path prefix.
    pub path: String,
}

impl UrlPattern {
    /// Parse `scheme://host[:port]/path-prefix`.
    pub fn parse(url: &str) -> Result<Self, PatternError> {
        // What the owner reads when granting is what is matched: no
        // lookalike letters in a host, nothing a terminal would act on.
        if !url.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(PatternError::Chars(url.escape_debug().to_string()));
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| PatternError::Scheme(url.into()))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" | "wss" => 443,
            "http" | "ws" => 80,
            _ => return Err(PatternError::Scheme(url.into())),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
            Some(i) => (&rest[..i], "/"),
            None => (rest, "/"),
        };
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, tail) = v6.split_once(']').ok_or_else(|| PatternError::NoHost(url.into()))?;
                (host, tail.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some("*") => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| PatternError::Port(url.into()))?),
            None => Some(default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if host.is_empty() {
            return Err(PatternError::NoHost(url.into()));
        }
        Ok(UrlPattern { scheme, host, port, path: path.split('?').next().unwrap_or("/").to_string() })
    }

    /// Whether every URL this pattern matches is also matched by `self`.
    pub fn covers(&self, other: &UrlPattern) -> bool {
        self.scheme == other.scheme
            && (self.port.is_none() || self.port == other.port)
            && host_covers(&self.host, &other.host)
            && path_covers(&self.path, &other.path)
    }

    /// Whether the host is `*` or `*.domain`.
    pub fn is_wildcard_host(&self) -> bool {
        self.host.starts_with('*')
    }

    /// `scheme://host[:port]/`, the narrowest grant that would cover it.
    pub fn origin(&self) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match self.port {
            Some(port) if port == default => format!("{}://{}/", self.scheme, host),
            Some(port) => format!("{}://{}:{}/", self.scheme, host, port),
            None => format!("{}://{}:*/", self.scheme, host),
        }
    }
}

fn host_covers(pattern: &str, host: &str) -> bool {
    pattern == "*"
        || pattern == host
        || pattern.strip_prefix('*').is_some_and(|suffix| suffix.starts_with('.') && host.ends_with(suffix))
}

fn path_covers(prefix: &str, path: &str) -> bool {
    path == prefix || path.starts_with(prefix) && (prefix.ends_with('/') || path[prefix.len()..].starts_with('/'))
}

const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"];

/// Parse the CLI form `URL[,METHOD...]`; no methods means any the skill asks for.
pub fn parse_granted_rule(spec: &str) -> Result<GrantedRule, PatternError> {
    let mut parts = spec.split(',');
    let url = parts.next().unwrap_or_default().trim().to_string();
    UrlPattern::parse(&url)?;
    let mut methods = Vec::new();
    for m in parts.map(|m| m.trim().to_ascii_uppercase()).filter(|m| !m.is_empty()) {
        if !METHODS.contains(&m.as_str()) {
            return Err(PatternError::Method(url, m));
        }
        methods.push(m);
    }
    if methods.is_empty() {
        methods.push("*".into());
    }
    Ok(GrantedRule { url, methods })
}

/// `{NAME}` placeholders in a template.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start + 1..].find('}') else { break };
        let name = &rest[start + 1..start + 1 + len];
        if valid_secret_name(name) {
            out.push(name.to_string());
            rest = &rest[start + 1 + len..];
        } else {
            // `{` of JSON, say: a placeholder may start inside.
            rest = &rest[start + 1..];
        }
    }
    out
}

/// Secret names: upper-case letters, digits and `_`, at most 64 characters.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

impl HttpRule {
    /// The methods, upper-case; GET when none are listed.
    pub fn methods(&self) -> Vec<String> {
        if self.methods.is_empty() {
            vec!["GET".into()]
        } else {
            self.methods.iter().map(|m| m.to_ascii_uppercase()).collect()
        }
    }

    /// The secrets its URL and headers name.
    pub fn secrets(&self) -> Vec<String> {
        let mut names = placeholders(&self.url);
        for (_, value) in &self.headers {
            names.extend(placeholders(value));
        }
        names
    }
}

impl Capabilities {
    /// Every secret the component asks for, named directly or in a rule.
    pub fn all_secrets(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.secrets.iter().cloned().collect();
        names.extend(self.http.iter().flat_map(HttpRule::secrets));
        names
    }

    /// Each thing asked for, in words (`http GET https://…`, `secret X`, `kv`).
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .http
            .iter()
            .map(|r| {
                let methods = if r.methods.is_empty() { "GET".to_string() } else { r.methods.join(",") };
                let headers: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                let headers =
                    if headers.is_empty() { String::new() } else { format!(" (sets {})", headers.join(", ")) };
                format!("http {methods} {}{headers}", r.url)
            })
            .collect();
        out.extend(self.all_secrets().into_iter().map(|s| format!("secret {s}")));
        out.extend(
            Rights::ALL.into_iter().filter(|(r, ..)| self.rights.contains(*r)).map(|(_, name, _)| name.to_string()),
        );
        out
    }
}

/// An HTTP rule the host enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveRule {
    /// Where it applies.
    pub pattern: UrlPattern,
    /// The methods it allows.
    pub methods: Vec<String>,
    /// Headers the host sets, with placeholders.
    pub headers: Vec<(String, String)>,
}

impl EffectiveRule {
    /// Whether `method` is allowed.
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }
}

/// Effective rights of one loaded component.
#[derive(Clone, Debug, Default)]
pub struct Effective {
    /// The owner approved this build (or opted in to carry-over): only
    /// then does it run unattended, start as a channel or reach the model.
    pub approved: bool,
    /// The build the rights were approved for, when this one differs.
    pub changed_from: Option<String>,
    /// HTTP rules in force.
    pub http: Vec<EffectiveRule>,
    /// Secrets the host may put into requests by HTTP rules.
    pub secrets: BTreeSet<String>,
    /// Secrets usable by name through `crypto` (listed in the manifest's
    /// `secrets`, not merely named by a rule).
    pub crypto_secrets: BTreeSet<String>,
    /// Rights in force.
    pub rights: Rights,
    /// Requested but not (or no longer) effective, in words.
    pub pending: Vec<String>,
}

impl Effective {
    /// Whether a wildcard HTTP rule is in force: the component may reach
    /// hosts the owner did not name, servers anyone can set up.
    pub fn reaches_unnamed_hosts(&self) -> bool {
        self.http.iter().any(|r| r.pattern.is_wildcard_host())
    }
}

/// Requested ∩ granted for one HTTP rule, or None if they do not meet.
fn intersect(requested: &HttpRule, granted: &GrantedRule) -> Option<EffectiveRule> {
    let r = UrlPattern::parse(&requested.url).ok()?;
    let g = UrlPattern::parse(&granted.url).ok()?;
    let pattern = if g.covers(&r) {
        r
    } else if r.covers(&g) {
        g
    } else {
        return None;
    };
    let any = granted.methods.iter().any(|m| m == "*");
    let methods: Vec<String> = requested.methods().into_iter().filter(|m| any || granted.methods.contains(m)).collect();
    (!methods.is_empty()).then(|| EffectiveRule { pattern, methods, headers: requested.headers.clone() })
}

/// Compute what a component with `sha256` requesting `requested` may do.
/// A changed build carries nothing until the owner approves it, unless
/// they opted in to carry-over for this component.
pub fn effective(requested: &Capabilities, sha256: &str, grant: Option<&GrantRecord>) -> Effective {
    let carry = grant.is_some_and(|g| g.carry_over);
    let mut eff = rights(requested, sha256, grant, carry);
    eff.approved = grant.is_some_and(|g| g.sha256 == sha256 || g.carry_over);
    eff.changed_from = grant.filter(|g| g.sha256 != sha256).map(|g| g.sha256.clone());
    eff
}

/// Requested ∩ granted; with `carry`, a changed build keeps what its
/// previous approved version also requested.
fn rights(requested: &Capabilities, sha256: &str, grant: Option<&GrantRecord>, carry: bool) -> Effective {
    let mut eff = Effective::default();
    let empty = GrantRecord::default();
    let grant = grant.unwrap_or(&empty);
    let same_version = grant.sha256 == sha256;
    let mut flag = |asked: bool, approved: bool, granted: bool, what: &str| -> bool {
        if !asked {
            return false;
        }
        let ok = granted && (same_version || (carry && approved));
        if !ok {
            eff.pending.push(what.to_string());
        }
        ok
    };
    let ap = &grant.approved;
    let g = &grant.granted;
    let mut rights = Rights::default();
    for (right, name, _) in Rights::ALL {
        let has = |set: Rights| set.contains(right);
        if flag(has(requested.rights), has(ap.rights), has(g.rights), name) {
            rights |= right;
        }
    }
    let approved_secrets = ap.all_secrets();
    for name in requested.all_secrets() {
        if flag(true, approved_secrets.contains(&name), g.secrets.contains(&name), &format!("secret {name}")) {
            if requested.secrets.contains(&name) {
                eff.crypto_secrets.insert(name.clone());
            }
            if requested.http.iter().any(|r| r.secrets().contains(&name)) {
                eff.secrets.insert(name);
            }
        }
    }
    for rule in &requested.http {
        let carried = same_version || (carry && ap.http.contains(rule));
        let hit: Vec<EffectiveRule> = g.http.iter().filter_map(|gr| intersect(rule, gr)).collect();
        if carried && !hit.is_empty() {
            eff.http.extend(hit);
        } else {
            eff.pending.push(format!("http {} {}", rule.methods().join(","), rule.url));
        }
    }
    Effective { rights, ..eff }
}

/// Apply a grant for the component `sha256` that requests `requested`.
/// Granting re-approves the current version: its request becomes the
/// baseline that later versions are compared against.
pub fn apply_grant(record: &mut GrantRecord, requested: &Capabilities, sha256: &str, change: &GrantChange) {
    if record.sha256 != sha256 {
        // Keep only what the new version may inherit, then rebase on it.
        let eff = rights(requested, sha256, Some(record), true);
        record.granted.secrets.retain(|s| eff.secrets.contains(s) || eff.crypto_secrets.contains(s));
        record.granted.rights = record.granted.rights & eff.rights;
        record
            .granted
            .http
            .retain(|g| requested.http.iter().any(|r| (record.approved.http.contains(r)) && intersect(r, g).is_some()));
    }
    let g = &mut record.granted;
    if change.all {
        for rule in &requested.http {
            let granted = GrantedRule { url: rule.url.clone(), methods: rule.methods() };
            if !g.http.contains(&granted) {
                g.http.push(granted);
            }
        }
        g.secrets.extend(requested.all_secrets());
        g.rights |= requested.rights;
    }
    let c = &change.rights;
    for rule in &c.http {
        if !g.http.contains(rule) {
            g.http.push(rule.clone());
        }
    }
    g.secrets.extend(c.secrets.iter().cloned());
    g.rights |= c.rights;
    record.sha256 = sha256.to_string();
    record.approved = requested.clone();
    if let Some(carry) = change.carry_over {
        record.carry_over = carry;
    }
}

/// Take rights back. `--http URL` removes every granted rule with that URL.
pub fn apply_revoke(record: &mut GrantRecord, change: &GrantChange) {
    if change.all {
        record.granted = GrantSet::default();
        return;
    }
    let (g, c) = (&mut record.granted, &change.rights);
    g.http.retain(|rule| !c.http.iter().any(|r| r.url == rule.url));
    g.secrets.retain(|s| !c.secrets.contains(s));
    g.rights = g.rights - c.rights;
}

/// What a denial tells to run to grant component `skill` what `flags`
/// name. A draft the agent is trying (`draft:NAME`) runs with no rights
/// and cannot be granted: the command is for the skill once proposed,
/// under its own name.
pub fn grant_advice(skill: &str, flags: &str) -> String {
    match skill.strip_prefix("draft:") {
        Some(name) => format!("once proposed, the owner may run `wasiclaw skills grant {name} {flags}`"),
        None => format!("run `wasiclaw skills grant {skill} {flags}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> UrlPattern {
        UrlPattern::parse(s).unwrap()
    }

    #[test]
    fn patterns_match_structurally() {
        let api = pat("https://api.example.com/v1/");
        assert!(api.covers(&pat("https://api.example.com/v1/forecast")));
        assert!(!api.covers(&pat("https://api.example.com/v10")));
        assert!(!api.covers(&pat("http://api.example.com/v1/x")), "scheme differs");
        assert!(!api.covers(&pat("https://api.example.com:8443/v1/x")), "port differs");
        assert!(!api.covers(&pat("https://api.example.com.evil.net/v1/x")));
        assert!(pat("https://api.example.com/v1").covers(&pat("https://api.example.com/v1/x")));
        assert!(!pat("https://api.example.com/v1").covers(&pat("https://api.example.com/v1x")));
        assert!(pat("https://*.example.com/").covers(&pat("https://a.example.com/x")));
        assert!(!pat("https://*.example.com/").covers(&pat("https://example.com.evil/x")));
        assert!(pat("https://*/").covers(&pat("https://anything.org/")));
        assert_eq!(pat("http://[::1]:8080/a").host, "::1");
        assert_eq!(pat("http://127.0.0.1:8080").port, Some(8080));
        assert!(pat("http://*:*/").covers(&pat("http://127.0.0.1:8080/x")));
        assert!(!pat("http://*/").covers(&pat("http://127.0.0.1:8080/x")), "no port means the default port");
        assert!(UrlPattern::parse("ftp://x/").is_err());
        assert!(UrlPattern::parse("https://").is_err());
    }

    #[test]
    fn effective_is_requested_intersect_granted() {
        let requested = Capabilities {
            http: vec![HttpRule { url: "https://*/".into(), methods: vec![], headers: vec![] }],
            rights: Rights::KV,
            ..Default::default()
        };
        let mut record = GrantRecord::default();
        assert!(effective(&requested, "a", None).http.is_empty(), "empty means deny");
        let rights = GrantSet {
            http: vec![parse_granted_rule("https://en.wikipedia.org/").unwrap()],
            rights: Rights::NOTIFY,
            ..Default::default()
        };
        apply_grant(&mut record, &requested, "a", &GrantChange { rights, all: false, carry_over: None });
        let eff = effective(&requested, "a", Some(&record));
        assert_eq!(eff.http.len(), 1);
        assert_eq!(eff.http[0].pattern.host, "en.wikipedia.org", "the narrower side wins");
        assert_eq!(eff.http[0].methods, vec!["GET"]);
        assert!(!eff.rights.contains(Rights::NOTIFY), "granted but never requested");
        assert!(!eff.rights.contains(Rights::KV) && eff.pending == vec!["kv"]);
    }

    #[test]
    fn a_changed_component_inherits_nothing_new() {
        let v1 = Capabilities {
            http: vec![HttpRule { url: "https://api.a.com/".into(), methods: vec![], headers: vec![] }],
            ..Default::default()
        };
        let mut record = GrantRecord::default();
        apply_grant(
            &mut record,
            &v1,
            "sha1",
            &GrantChange {
                carry_over: None,
                rights: GrantSet {
                    http: vec![parse_granted_rule("https://*/").unwrap()],
                    rights: Rights::KV,
                    ..Default::default()
                },
                all: false,
            },
        );
        let mut v2 = v1.clone();
        v2.http.push(HttpRule { url: "https://api.b.com/".into(), methods: vec![], headers: vec![] });
        v2.rights = Rights::KV;
        let eff = effective(&v2, "sha2", Some(&record));
        assert!(!eff.approved && eff.http.is_empty(), "a changed build carries nothing until approved");
        assert_eq!(eff.changed_from.as_deref(), Some("sha1"));
        record.carry_over = true;
        let eff = effective(&v2, "sha2", Some(&record));
        assert!(eff.approved, "the owner opted in to carry-over");
        assert_eq!(eff.http.len(), 1, "only the rule v1 asked for carries over");
        assert_eq!(eff.http[0].pattern.host, "api.a.com");
        assert!(!eff.rights.contains(Rights::KV), "kv was granted but v1 never asked for it");
        assert_eq!(eff.pending, vec!["kv".to_string(), "http GET https://api.b.com/".to_string()]);
        // The same sha gets everything granted that it asks for.
        let eff = effective(&v2, "sha1", Some(&record));
        assert!(eff.rights.contains(Rights::KV) && eff.http.len() == 2);
    }

    #[test]
    fn rights_are_a_set_stored_as_booleans() {
        let caps = Capabilities { rights: Rights::KV | Rights::MEMORY_READ, ..Default::default() };
        let json = serde_json::to_value(&caps).unwrap();
        assert_eq!(json["kv"], true);
        assert_eq!(json["memory_read"], true);
        assert_eq!(json["notify"], false);
        // The shape grant records had before rights were a set still reads.
        let old = r#"{"http":[],"secrets":["K"],"kv":false,"notify":true,"files":false,"memory_read":false,"memory_write":true}"#;
        let back: GrantSet = serde_json::from_str(old).unwrap();
        assert_eq!(back.rights, Rights::NOTIFY | Rights::MEMORY_WRITE);
        assert!(back.secrets.contains("K"));
        assert_eq!(serde_json::from_value::<Capabilities>(json).unwrap(), caps);
        assert_eq!((back.rights - Rights::NOTIFY).names().collect::<Vec<_>>(), vec!["memory-write"]);
        assert_eq!(Rights::named("memory_write"), Some(Rights::MEMORY_WRITE));
    }

    #[test]
    fn methods_and_placeholders() {
        let r = HttpRule {
            url: "https://api.telegram.org/bot{TELEGRAM_TOKEN}/".into(),
            methods: vec!["POST".into()],
            headers: vec![("x-key".into(), "k {OTHER}".into())],
        };
        assert_eq!(r.secrets(), vec!["TELEGRAM_TOKEN", "OTHER"]);
        let get_only = parse_granted_rule("https://api.telegram.org/,GET").unwrap();
        assert!(intersect(&r, &get_only).is_none(), "POST was not granted");
        let any = parse_granted_rule("https://api.telegram.org/").unwrap();
        assert_eq!(intersect(&r, &any).unwrap().methods, vec!["POST"]);
        assert!(parse_granted_rule("https://x/,FETCH").is_err());
        assert_eq!(placeholders("{a} {B_1} {"), vec!["B_1"]);
        assert_eq!(placeholders(r#"{"op":6,"d":{"token":"{DISCORD_TOKEN}","seq":2}}"#), vec!["DISCORD_TOKEN"]);
    }
}
