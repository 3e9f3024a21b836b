//! Replies leave the agent as Markdown; each platform renders its own
//! dialect. This module converts the common subset (bold, italic, strike,
//! inline code, code blocks, links, headings, bullets) and splits long
//! replies into pieces the platform accepts.
//!
//! Invariants: every character of the reply that is not markup survives
//! (escaped as the dialect needs); a piece is never longer than the limit
//! (counted in UTF-16 units, as Telegram and Discord count); a split falls
//! between paragraphs, then lines, then words, and a code block cut in two
//! is closed and reopened so each piece renders on its own.

/// The markup a platform renders (WIT `markup`).
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Markup {
    /// No markup.
    Plain,
    /// Markdown as is.
    Markdown,
    /// Telegram's HTML.
    TelegramHtml,
    /// Slack mrkdwn.
    SlackMrkdwn,
    /// WhatsApp's marks.
    Whatsapp,
}

/// Convert `markdown` and split it into pieces of at most `max` UTF-16 units.
pub fn render(markdown: &str, markup: Markup, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for block in blocks(markdown.trim()) {
        let joined = if current.is_empty() { block.clone() } else { format!("{current}\n\n{block}") };
        if units(&convert(&joined, markup)) <= max {
            current = joined;
            continue;
        }
        if !current.is_empty() {
            pieces.push(convert(&current, markup));
        }
        current = String::new();
        for part in split_block(&block, markup, max) {
            let piece = convert(&part, markup);
            if units(&piece) <= max {
                pieces.push(piece);
            }
        }
    }
    if !current.is_empty() {
        pieces.push(convert(&current, markup));
    }
    pieces.retain(|p| !p.trim().is_empty());
    pieces
}

fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Paragraphs, with a fenced code block kept as one block.
fn blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.trim().is_empty() && !line.trim_start().starts_with("```") {
            if !current.is_empty() {
                out.push(current.join("\n"));
                current.clear();
            }
            continue;
        }
        current.push(line);
    }
    if !current.is_empty() {
        out.push(current.join("\n"));
    }
    out
}

/// Split one block that is too long: by lines (re-fencing code), then by
/// words, then by characters.
fn split_block(block: &str, markup: Markup, max: usize) -> Vec<String> {
    let fence = block.trim_start().starts_with("```").then(|| block.lines().next().unwrap_or("```").trim().to_string());
    let body: Vec<&str> = match &fence {
        Some(_) => {
            let lines: Vec<&str> = block.lines().skip(1).collect();
            let end = if lines.last().is_some_and(|l| l.trim() == "```") { lines.len() - 1 } else { lines.len() };
            lines[..end].to_vec()
        }
        None => block.lines().collect(),
    };
    let wrap = |s: &str| match &fence {
        Some(open) => format!("{open}\n{s}\n```"),
        None => s.to_string(),
    };
    let fits = |s: &str| units(&convert(&wrap(s), markup)) <= max;
    let mut out = Vec::new();
    let mut current = String::new();
    for line in body {
        let joined = if current.is_empty() { line.to_string() } else { format!("{current}\n{line}") };
        if fits(&joined) {
            current = joined;
            continue;
        }
        if !current.is_empty() {
            out.push(wrap(&current));
        }
        current = String::new();
        // One line alone is too long: pack its words (or its characters).
        for token in line.split_inclusive(' ').flat_map(|w| chunks_of(w, &fits)) {
            let joined = format!("{current}{token}");
            if fits(&joined) {
                current = joined;
            } else {
                if !current.is_empty() {
                    out.push(wrap(current.trim_end()));
                }
                current = token;
            }
        }
    }
    if !current.is_empty() {
        out.push(wrap(&current));
    }
    out
}

/// A word that does not fit alone, cut into pieces that do.
fn chunks_of(word: &str, fits: &dyn Fn(&str) -> bool) -> Vec<String> {
    if fits(word) {
        return vec![word.to_string()];
    }
    let mut out = Vec::new();
    let mut current = String::new();
    for c in word.chars() {
        current.push(c);
        if !fits(&current) {
            current.pop();
            out.push(std::mem::take(&mut current));
            current.push(c);
        }
    }
    out.push(current);
    out
}

/// Convert Markdown to one dialect.
pub fn convert(markdown: &str, markup: Markup) -> String {
    if markup == Markup::Markdown {
        return markdown.to_string();
    }
    let mut out = String::new();
    let mut lines = markdown.lines();
    let mut first = true;
    while let Some(line) = lines.next() {
        if !first {
            out.push('\n');
        }
        first = false;
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            let mut code = Vec::new();
            for l in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                code.push(l);
            }
            out.push_str(&code_block(&code.join("\n"), lang.trim(), markup));
            continue;
        }
        let trimmed = line.trim_start();
        let heading = trimmed.strip_prefix("### ").or(trimmed.strip_prefix("## ")).or(trimmed.strip_prefix("# "));
        if let Some(h) = heading {
            out.push_str(&inline(&format!("**{h}**"), markup));
        } else if let Some(item) = trimmed.strip_prefix("- ").or(trimmed.strip_prefix("* ")) {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(indent);
            out.push_str("• ");
            out.push_str(&inline(item, markup));
        } else {
            out.push_str(&inline(line, markup));
        }
    }
    out
}

fn code_block(code: &str, lang: &str, markup: Markup) -> String {
    match markup {
        Markup::TelegramHtml if lang.is_empty() => format!("<pre>{}</pre>", html_escape(code)),
        Markup::TelegramHtml => {
            format!("<pre><code class=\"language-{}\">{}</code></pre>", html_escape(lang), html_escape(code))
        }
        Markup::SlackMrkdwn => format!("```{}```", slack_escape(code)),
        Markup::Whatsapp => format!("```{code}```"),
        Markup::Plain | Markup::Markdown => code.to_string(),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn escape(s: &str, markup: Markup) -> String {
    match markup {
        Markup::TelegramHtml => html_escape(s),
        Markup::SlackMrkdwn => slack_escape(s),
        _ => s.to_string(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Bold,
    Italic,
    Strike,
}

fn wrap_style(inner: &str, style: Style, markup: Markup) -> String {
    let (open, close) = match (markup, style) {
        (Markup::TelegramHtml, Style::Bold) => ("<b>", "</b>"),
        (Markup::TelegramHtml, Style::Italic) => ("<i>", "</i>"),
        (Markup::TelegramHtml, Style::Strike) => ("<s>", "</s>"),
        (Markup::SlackMrkdwn | Markup::Whatsapp, Style::Bold) => ("*", "*"),
        (Markup::SlackMrkdwn | Markup::Whatsapp, Style::Italic) => ("_", "_"),
        (Markup::SlackMrkdwn | Markup::Whatsapp, Style::Strike) => ("~", "~"),
        _ => ("", ""),
    };
    format!("{open}{inner}{close}")
}

/// Inline markup of one line. Unmatched markers stay literal text.
fn inline(line: &str, markup: Markup) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut text = String::new();
    let mut i = 0;
    let find = |from: usize, pat: &[char]| -> Option<usize> {
        (from..chars.len().saturating_sub(pat.len() - 1)).find(|&j| chars[j..j + pat.len()] == *pat)
    };
    let flush = |text: &mut String, out: &mut String| {
        out.push_str(&escape(text, markup));
        text.clear();
    };
    while i < chars.len() {
        let c = chars[i];
        let rest_starts = |pat: &str| chars[i..].iter().collect::<String>().starts_with(pat);
        // Inline code: its content is literal.
        if c == '`'
            && let Some(end) = find(i + 1, &['`'])
        {
            flush(&mut text, &mut out);
            let code: String = chars[i + 1..end].iter().collect();
            out.push_str(&match markup {
                Markup::TelegramHtml => format!("<code>{}</code>", html_escape(&code)),
                Markup::SlackMrkdwn => format!("`{}`", slack_escape(&code)),
                Markup::Whatsapp => format!("```{code}```"),
                _ => code,
            });
            i = end + 1;
            continue;
        }
        // [text](url)
        if c == '['
            && let Some(close) = find(i + 1, &[']', '('])
            && let Some(end) = find(close + 2, &[')'])
        {
            flush(&mut text, &mut out);
            let label: String = chars[i + 1..close].iter().collect();
            let url: String = chars[close + 2..end].iter().collect();
            // Only web and mail addresses become links: Slack's `<!channel|…>`
            // or `<@U…|…>` and Telegram's `tg://user?id=` are mentions that
            // ping people, and the model writes the address.
            let web = ["https://", "http://", "mailto:"].iter().any(|p| url.to_ascii_lowercase().starts_with(p));
            out.push_str(&match markup {
                Markup::TelegramHtml | Markup::SlackMrkdwn if !web => {
                    format!("{} ({})", inline(&label, markup), escape(&url, markup))
                }
                Markup::TelegramHtml => {
                    format!("<a href=\"{}\">{}</a>", html_escape(&url), inline(&label, markup))
                }
                Markup::SlackMrkdwn => format!("<{}|{}>", slack_escape(&url), slack_escape(&label)),
                _ if label == url => url,
                _ => format!("{} ({url})", inline(&label, markup)),
            });
            i = end + 1;
            continue;
        }
        let marker = ["**", "__", "~~"].into_iter().find(|m| rest_starts(m)).or_else(|| {
            // A single `*`/`_` opens italics only before a non-space, and
            // `_` not inside a word (snake_case stays literal).
            let next_ok = chars.get(i + 1).is_some_and(|n| !n.is_whitespace());
            let word_before = i > 0 && chars[i - 1].is_alphanumeric();
            match c {
                '*' if next_ok => Some("*"),
                '_' if next_ok && !word_before => Some("_"),
                _ => None,
            }
        });
        if let Some(m) = marker {
            let pat: Vec<char> = m.chars().collect();
            let end = find(i + pat.len(), &pat).filter(|&e| e > i + pat.len() && !chars[e - 1].is_whitespace());
            let end = end.filter(|&e| m != "_" || chars.get(e + 1).is_none_or(|n| !n.is_alphanumeric()));
            if let Some(end) = end {
                flush(&mut text, &mut out);
                let inner: String = chars[i + pat.len()..end].iter().collect();
                let style = match m {
                    "**" | "__" => Style::Bold,
                    "~~" => Style::Strike,
                    _ => Style::Italic,
                };
                out.push_str(&wrap_style(&inline(&inner, markup), style, markup));
                i = end + pat.len();
                continue;
            }
        }
        text.push(c);
        i += 1;
    }
    flush(&mut text, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_html_escapes_text_and_converts_marks() {
        let md = "**Total** < 5 & *rising*: `a<b>` see [docs](https://x.example/?a=1&b=2)";
        assert_eq!(
            convert(md, Markup::TelegramHtml),
            "<b>Total</b> &lt; 5 &amp; <i>rising</i>: <code>a&lt;b&gt;</code> see \
             <a href=\"https://x.example/?a=1&amp;b=2\">docs</a>"
        );
        assert_eq!(
            convert("```rust\nlet x = a < b;\n```", Markup::TelegramHtml),
            "<pre><code class=\"language-rust\">let x = a &lt; b;</code></pre>"
        );
    }

    #[test]
    fn slack_and_whatsapp_dialects() {
        let md = "# Plan\n- **buy** milk & eggs\n- ~~old~~ see [site](https://s.example)";
        assert_eq!(
            convert(md, Markup::SlackMrkdwn),
            "*Plan*\n• *buy* milk &amp; eggs\n• ~old~ see <https://s.example|site>"
        );
        assert_eq!(convert(md, Markup::Whatsapp), "*Plan*\n• *buy* milk & eggs\n• ~old~ see site (https://s.example)");
        assert_eq!(convert(md, Markup::Plain), "Plan\n• buy milk & eggs\n• old see site (https://s.example)");
    }

    /// A link the model writes pings nobody: only web and mail addresses
    /// become links, so Slack's special mentions and Telegram's user links
    /// stay text.
    #[test]
    fn a_link_is_never_a_mention() {
        let md = "[all](!channel) [you](@U0123) [him](tg://user?id=42) [web](https://a.example)";
        let slack = convert(md, Markup::SlackMrkdwn);
        assert_eq!(slack, "all (!channel) you (@U0123) him (tg://user?id=42) <https://a.example|web>");
        let telegram = convert(md, Markup::TelegramHtml);
        assert!(!telegram.contains("tg://user?id=42\""), "{telegram}");
        assert!(telegram.ends_with("<a href=\"https://a.example\">web</a>"), "{telegram}");
    }

    #[test]
    fn literal_markers_survive() {
        assert_eq!(convert("snake_case_name and 2 * 3 * 4", Markup::TelegramHtml), "snake_case_name and 2 * 3 * 4");
        assert_eq!(convert("a **dangling", Markup::SlackMrkdwn), "a **dangling");
    }

    #[test]
    fn splits_within_limits_without_losing_text() {
        let para = |n: usize| format!("Paragraph {n} has some words & symbols <here>.");
        let md: Vec<String> = (0..40).map(para).collect();
        let pieces = render(&md.join("\n\n"), Markup::TelegramHtml, 200);
        assert!(pieces.len() > 5);
        for p in &pieces {
            assert!(units(p) <= 200, "{} > 200: {p}", units(p));
        }
        let joined = pieces.join("\n\n");
        for n in 0..40 {
            assert!(joined.contains(&format!("Paragraph {n} has some words &amp; symbols &lt;here&gt;.")), "{n} lost");
        }
    }

    #[test]
    fn long_code_block_and_word_are_split_and_refenced() {
        let code: Vec<String> = (0..30).map(|i| format!("line {i} of code")).collect();
        let md = format!("```\n{}\n```", code.join("\n"));
        let pieces = render(&md, Markup::TelegramHtml, 120);
        assert!(pieces.len() > 1);
        assert!(pieces.iter().all(|p| p.starts_with("<pre>") && p.ends_with("</pre>") && units(p) <= 120));
        let word = "x".repeat(250);
        let pieces = render(&word, Markup::Markdown, 100);
        assert_eq!(pieces.concat(), word);
        assert!(pieces.iter().all(|p| units(p) <= 100));
    }
}
