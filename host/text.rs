//! Small text helpers shared by the host: truncation on char boundaries,
//! and escaping control characters in text that came from a component
//! before it reaches the owner's terminal or a log.

/// At most `max` bytes of `s`, cut on a char boundary, with a marker if cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [truncated {} bytes]", &s[..end], s.len() - end)
}

/// The last `max` bytes of `s`, cut on a char boundary.
pub fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// `s` with control characters escaped (`\u{1b}`), newlines and tabs kept.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, |c| c.is_control() && c != '\n' && c != '\t')
}

/// `s` on one line: every control character escaped, newlines too.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, char::is_control)
}

fn escape(s: &str, bad: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(&bad) {
        return s.into();
    }
    s.chars().map(|c| if bad(c) { c.escape_default().to_string() } else { c.to_string() }).collect::<String>().into()
}

/// The name a unit enum variant serializes to (`needs-approval`), for
/// `Display` of the state enums, so text and JSON always agree.
pub fn variant_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::one_line("a\x1b[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        assert_eq!(super::printable("a\x1b]0;x\x07\nb"), "a\\u{1b}]0;x\\u{7}\nb");
        assert_eq!(super::printable("plain"), "plain");
    }
}
