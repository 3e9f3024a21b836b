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

/// A line diff of `old` and `new`: `- ` removed, `+ ` added, `  ` kept.
/// Hand-written (longest common subsequence after trimming the common
/// ends) because the scripts it compares are small and a diff crate would
/// be most of the code it adds; past a few million cells it shows the
/// changed middle as removed then added.
pub fn diff_lines(old: &[String], new: &[String]) -> Vec<String> {
    let head = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let tail = old[head..].iter().rev().zip(new[head..].iter().rev()).take_while(|(a, b)| a == b).count();
    let (a, b) = (&old[head..old.len() - tail], &new[head..new.len() - tail]);
    let mut out: Vec<String> = old[..head].iter().map(|l| format!("  {l}")).collect();
    if a.len().saturating_mul(b.len()) > 4_000_000 {
        out.extend(a.iter().map(|l| format!("- {l}")));
        out.extend(b.iter().map(|l| format!("+ {l}")));
    } else {
        // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
        let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if i < a.len() && j < b.len() && a[i] == b[j] {
                out.push(format!("  {}", a[i]));
                (i, j) = (i + 1, j + 1);
            } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
                out.push(format!("- {}", a[i]));
                i += 1;
            } else {
                out.push(format!("+ {}", b[j]));
                j += 1;
            }
        }
    }
    out.extend(old[old.len() - tail..].iter().map(|l| format!("  {l}")));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_line_diff_marks_what_changed_and_keeps_the_rest() {
        let lines = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        let diff = super::diff_lines(&lines("a b c d e"), &lines("a x c d f"));
        assert_eq!(diff, ["  a", "- b", "+ x", "  c", "  d", "- e", "+ f"]);
        assert_eq!(super::diff_lines(&lines("a"), &lines("a")), ["  a"]);
        assert_eq!(super::diff_lines(&[], &lines("a")), ["+ a"]);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::one_line("a\x1b[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        assert_eq!(super::printable("a\x1b]0;x\x07\nb"), "a\\u{1b}]0;x\\u{7}\nb");
        assert_eq!(super::printable("plain"), "plain");
    }
}
