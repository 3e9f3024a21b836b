//! Scrubbing secret values out of what a remote server sends back.
//!
//! This is the second line of defence: the first is that a secret goes only
//! where the owner's rule puts it (`policy`). A server that echoes a value
//! still must not hand it to the component, in any spelling it could use.
//!
//! Invariants:
//! - One matcher covers, byte by byte and in any mix: the raw value in any
//!   ASCII case, percent-encoding (either hex case, any subset of bytes
//!   encoded), form encoding (`+` for space), JSON string escapes
//!   (`\/`, `\uXXXX`, ...) and HTML character references (`&#x2F;`,
//!   `&#47;`, `&amp;`, ...). Hex is matched by the same matcher (so in
//!   either case); base64, standard and URL-safe, at all three alignments.
//! - A header whose name contains a secret is dropped; a value split over
//!   several headers drops every header it touches.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue};

const MARK: &[u8] = b"[REDACTED]";

/// The shortest base64 run that is matched: shorter ones would hit by chance.
const MIN_BASE64: usize = 6;

/// Length of a match of `secret` at the start of `hay`, in any of the
/// escaped spellings.
fn match_at(hay: &[u8], secret: &[u8]) -> Option<usize> {
    let Some((&want, rest)) = secret.split_first() else { return Some(0) };
    let mut options: [Option<usize>; 4] = [None; 4];
    let first = *hay.first()?;
    if first.eq_ignore_ascii_case(&want) || (want == b' ' && first == b'+') {
        options[0] = Some(1);
    }
    if first == b'%'
        && let Some(b) =
            hay.get(1..3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok())
        && b.eq_ignore_ascii_case(&want)
    {
        options[1] = Some(3);
    }
    if first == b'\\' {
        options[2] = json_escape(&hay[1..]).filter(|(b, _)| b.eq_ignore_ascii_case(&want)).map(|(_, n)| n + 1);
    }
    if first == b'&' {
        options[3] = html_reference(&hay[1..]).filter(|(b, _)| b.eq_ignore_ascii_case(&want)).map(|(_, n)| n + 1);
    }
    options.into_iter().flatten().find_map(|n| match_at(&hay[n..], rest).map(|m| n + m))
}

/// The byte a JSON escape (after the backslash) stands for, and its length.
fn json_escape(s: &[u8]) -> Option<(u8, usize)> {
    Some(match *s.first()? {
        b'/' => (b'/', 1),
        b'\\' => (b'\\', 1),
        b'"' => (b'"', 1),
        b'n' => (b'\n', 1),
        b't' => (b'\t', 1),
        b'r' => (b'\r', 1),
        b'u' => {
            let code = u32::from_str_radix(std::str::from_utf8(s.get(1..5)?).ok()?, 16).ok()?;
            (u8::try_from(code).ok().filter(u8::is_ascii)?, 5)
        }
        _ => return None,
    })
}

/// The ASCII byte an HTML character reference (after the `&`) stands for,
/// and its length: `#47;`, `#x2F;` (the `;` may be left out, as browsers
/// allow), or one of the five names XML escapers use.
fn html_reference(s: &[u8]) -> Option<(u8, usize)> {
    for (name, byte) in [("amp;", b'&'), ("lt;", b'<'), ("gt;", b'>'), ("quot;", b'"'), ("apos;", b'\'')] {
        if s.starts_with(name.as_bytes()) {
            return Some((byte, name.len()));
        }
    }
    let (radix, skip) = match s.get(..2)? {
        [b'#', b'x' | b'X'] => (16, 2),
        [b'#', _] => (10, 1),
        _ => return None,
    };
    let digits = s[skip..].iter().take_while(|b| (**b as char).is_digit(radix)).count();
    let code = u32::from_str_radix(std::str::from_utf8(&s[skip..skip + digits]).ok()?, radix).ok()?;
    let end = skip + digits + usize::from(s.get(skip + digits) == Some(&b';'));
    Some((u8::try_from(code).ok().filter(u8::is_ascii)?, end))
}

/// The base64 runs that appear whenever `secret` is base64-encoded inside
/// a longer stream, whatever its alignment.
fn base64_runs(secret: &[u8]) -> Vec<String> {
    let mut runs = Vec::new();
    for offset in 0..3usize {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(secret);
        let skip = (offset * 8).div_ceil(6);
        let keep = bytes.len() * 8 / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&bytes);
            if let Some(run) = encoded.get(skip..keep).filter(|r| r.len() >= MIN_BASE64) {
                runs.push(run.to_string());
            }
        }
    }
    runs.sort();
    runs.dedup();
    runs
}

/// Byte ranges of `hay` that spell one of `secrets`.
pub fn spans(hay: &[u8], secrets: &[String]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let spelled = [secret.as_bytes().to_vec(), hex::encode(secret).into_bytes()];
        let runs = base64_runs(secret.as_bytes());
        let mut i = 0;
        while i < hay.len() {
            let escaped = spelled.iter().find_map(|s| match_at(&hay[i..], s));
            let encoded = runs.iter().find(|r| hay[i..].starts_with(r.as_bytes())).map(|r| r.len());
            match escaped.or(encoded) {
                Some(len) => {
                    found.push((i, i + len));
                    i += len;
                }
                None => i += 1,
            }
        }
    }
    found.sort();
    found
}

/// `bytes` with every spelling of each secret replaced by `[REDACTED]`.
pub fn redact(bytes: &[u8], secrets: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for (start, end) in spans(bytes, secrets) {
        if start < at {
            continue; // overlaps a span already replaced
        }
        out.extend_from_slice(&bytes[at..start]);
        out.extend_from_slice(MARK);
        at = end;
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

/// Scrub response headers: drop those whose name spells a secret, redact
/// values, and drop every header a value split across headers touches.
pub fn redact_headers(headers: &mut HeaderMap, secrets: &[String]) {
    if secrets.is_empty() {
        return;
    }
    let mut kept = HeaderMap::new();
    for (name, value) in headers.iter() {
        if !spans(name.as_str().as_bytes(), secrets).is_empty() {
            continue;
        }
        let clean = redact(value.as_bytes(), secrets);
        let value = HeaderValue::from_bytes(&clean).unwrap_or(HeaderValue::from_static("[REDACTED]"));
        kept.append(name.clone(), value);
    }
    // Values in order, joined without separators: a secret that shows only
    // here was split over several headers.
    let mut joined = Vec::new();
    let mut ranges = Vec::new();
    for (name, value) in kept.iter() {
        ranges.push((name.clone(), value.clone(), joined.len(), joined.len() + value.len()));
        joined.extend_from_slice(value.as_bytes());
    }
    let split = spans(&joined, secrets);
    headers.clear();
    for (name, value, start, end) in ranges {
        if !split.iter().any(|&(s, e)| s < end && start < e) {
            headers.append(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "tok:3f9a/Z c+1";

    fn scrubbed(hay: &str) -> String {
        String::from_utf8(redact(hay.as_bytes(), &[SECRET.to_string()])).unwrap()
    }

    #[test]
    fn every_spelling_is_redacted() {
        let hex = hex::encode(SECRET);
        let mut cases = vec![
            SECRET.to_string(),
            SECRET.to_uppercase(),
            "tok%3A3f9a%2FZ%20c%2B1".into(),
            "tok%3a3f9a%2fZ%20c%2b1".into(),
            "tok:3f9a%2FZ+c%2B1".into(),
            "%74%6F%6B%3A%33%66%39%61%2F%5A%20%63%2B%31".into(),
            r"tok:3f9a\/Z c+1".into(),
            r"tok\u003a3f9a\/Z\u0020c+1".into(),
            "tok&#x3A;3f9a&#47;Z&#32c&#X2b;1".into(),
            "&#116;ok:3f9a&#x002F;Z c+1".into(),
            hex.clone(),
            hex.to_uppercase(),
        ];
        for prefix in ["", "x", "xy"] {
            let bytes = format!("{prefix}{SECRET}!");
            cases.push(STANDARD_NO_PAD.encode(&bytes));
            cases.push(URL_SAFE_NO_PAD.encode(&bytes));
        }
        for case in cases {
            let out = scrubbed(&format!("before {case} after"));
            assert!(out.contains("[REDACTED]"), "{case} was not redacted: {out}");
            assert!(!out.contains(&case), "{case} survived: {out}");
        }
        assert_eq!(scrubbed("nothing here"), "nothing here");
    }

    #[test]
    fn headers_naming_or_splitting_a_secret_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ok", HeaderValue::from_static("fine"));
        headers.insert("x-echo", HeaderValue::from_static("tok:3f9a/Z c+1"));
        headers.insert("x-tok3f9a", HeaderValue::from_static("name"));
        headers.insert("x-a", HeaderValue::from_static("tok:3f9a"));
        headers.insert("x-b", HeaderValue::from_static("/Z c+1"));
        redact_headers(&mut headers, &["tok:3f9a/Z c+1".into(), "tok3f9a".into()]);
        assert_eq!(headers.get("x-ok").unwrap(), "fine");
        assert_eq!(headers.get("x-echo").unwrap(), "[REDACTED]");
        assert!(headers.get("x-tok3f9a").is_none(), "a header named after a secret is dropped");
        assert!(headers.get("x-a").is_none() && headers.get("x-b").is_none(), "a split value drops both halves");
    }
}
