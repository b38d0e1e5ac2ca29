//! The `cvbench …` commands quoted in the lab handouts: extracted from the
//! Markdown code blocks and split into words the way `sh` would for the
//! simple commands the handouts use, so the CLI can parse each one.

/// A quoted command: where it is and its words (starting with `cvbench`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quoted {
    pub line: usize,
    pub text: String,
    pub words: Vec<String>,
}

/// Errors splitting a quoted command.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("line {line}: unterminated quote in `{text}`")]
    UnterminatedQuote { line: usize, text: String },
    #[error("line {line}: shell syntax the checker cannot verify (`{what}`) in `{text}`")]
    Unsupported { line: usize, what: String, text: String },
}

/// Split one command line into words: whitespace separates, `'…'` and `"…"`
/// quote, a `#` at the start of a word starts a comment, and `;`, `&&`,
/// `|`, `&` end the command (what follows is another command). A plain
/// variable (`$ME`, `${ME}`, so handouts can name things per student) is
/// kept as written: every option the handouts fill from one takes free
/// text or a path. Command substitution and other expansions are refused.
pub fn split_words(line: usize, text: &str) -> Result<Vec<String>, CommandError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                let mut closed = false;
                while let Some(q) = chars.next() {
                    if q == c {
                        closed = true;
                        break;
                    }
                    if c == '"' && q == '$' {
                        let var = variable(&mut chars)
                            .ok_or_else(|| unsupported(line, "substitution inside quotes", text))?;
                        cur.push_str(&var);
                        continue;
                    }
                    if c == '"' && q == '`' {
                        return Err(unsupported(line, "substitution inside quotes", text));
                    }
                    cur.push(q);
                }
                if !closed {
                    return Err(CommandError::UnterminatedQuote { line, text: text.to_string() });
                }
            }
            '#' if !in_word => break,
            ';' | '|' | '&' => break,
            '$' => {
                let var = variable(&mut chars).ok_or_else(|| unsupported(line, "$", text))?;
                in_word = true;
                cur.push_str(&var);
            }
            '`' | '<' | '>' | '(' | ')' | '\\' | '*' | '?' => {
                return Err(unsupported(line, &c.to_string(), text));
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// After a `$`: the plain variable reference that follows (`NAME` or `{NAME}`), returned as
/// written with its `$`, or `None` (nothing consumed) for anything else, such as `$(…)`.
fn variable(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    let is_name = |c: &char| c.is_ascii_alphanumeric() || *c == '_';
    let braced = chars.peek() == Some(&'{');
    let mut probe = chars.clone();
    if braced {
        probe.next();
    }
    let name: String = std::iter::from_fn(|| probe.next_if(is_name)).collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) || (braced && probe.next() != Some('}')) {
        return None;
    }
    *chars = probe;
    Some(if braced { format!("${{{name}}}") } else { format!("${name}") })
}

fn unsupported(line: usize, what: &str, text: &str) -> CommandError {
    CommandError::Unsupported { line, what: what.to_string(), text: text.to_string() }
}

/// The suite's own commands the checker extracts.
pub const TOOLS: [&str; 2] = ["cvbench", "cvbench-runtime"];

/// Every `cvbench` (or `cvbench-runtime`) command in the fenced code blocks of a Markdown text.
/// Commands may follow a `$ ` prompt, or come after `;`/`&&` on a line.
pub fn quoted_commands(markdown: &str) -> Vec<Result<Quoted, CommandError>> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut block_is_shell = false;
    for (i, raw) in markdown.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if let Some(info) = t.strip_prefix("```") {
            in_block = !in_block;
            block_is_shell = in_block && matches!(info.trim(), "" | "sh" | "bash" | "shell" | "console");
            continue;
        }
        if !in_block || !block_is_shell {
            continue;
        }
        let t = t.strip_prefix("$ ").unwrap_or(t);
        for part in segments(t) {
            let part = part.trim();
            let tool = part.split_whitespace().next().unwrap_or("");
            if TOOLS.contains(&tool) {
                out.push(split_words(line, part).map(|words| Quoted { line, text: part.to_string(), words }));
            }
        }
    }
    out
}

/// The simple commands of one line, split at `;`, `&&`, `||` and `|`
/// outside quotes, with a trailing comment dropped.
fn segments(line: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    let mut prev_space = true;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.push(c);
            }
            (None, '#') if prev_space => break,
            (None, ';' | '|') => {
                if chars.peek() == Some(&'|') {
                    chars.next();
                }
                parts.push(std::mem::take(&mut cur));
            }
            (None, '&') => {
                if chars.peek() == Some(&'&') {
                    chars.next();
                }
                parts.push(std::mem::take(&mut cur));
            }
            (None, c) => cur.push(c),
        }
        prev_space = c.is_whitespace();
    }
    parts.push(cur);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_handles_quotes_and_comments() {
        let w = split_words(1, "cvbench run --backend native -- --x 'a b' # note").unwrap();
        assert_eq!(w, ["cvbench", "run", "--backend", "native", "--", "--x", "a b"]);
    }

    #[test]
    fn split_rejects_substitutions_it_cannot_check() {
        for text in [
            "cvbench run --image $(cat img)",
            "cvbench run --out \"$(mktemp -d)\"",
            "cvbench run --x `id`",
            "cvbench run $1",
        ] {
            assert!(matches!(split_words(3, text), Err(CommandError::Unsupported { line: 3, .. })), "{text}");
        }
    }

    #[test]
    fn split_keeps_plain_variables_as_written() {
        let w =
            split_words(1, "cvbench bench --results /tmp/lab6-$ME/r --out \"/tmp/x-${ME}\" --tag lab3-$ME:v1").unwrap();
        assert_eq!(
            w,
            ["cvbench", "bench", "--results", "/tmp/lab6-$ME/r", "--out", "/tmp/x-${ME}", "--tag", "lab3-$ME:v1"]
        );
    }

    #[test]
    fn commands_are_found_only_in_shell_code_blocks() {
        let md = "text cvbench lab 1\n```sh\ncvbench lab 1\nls /proc\nsleep 1; cvbench doctor && cvbench lab 2 --quick\ncvbench-runtime image ls\ncvbenchx 1\n```\n```text\ncvbench lab 9\n```\n";
        let found: Vec<Quoted> = quoted_commands(md).into_iter().map(Result::unwrap).collect();
        let texts: Vec<&str> = found.iter().map(|q| q.text.as_str()).collect();
        assert_eq!(texts, ["cvbench lab 1", "cvbench doctor", "cvbench lab 2 --quick", "cvbench-runtime image ls"]);
        assert_eq!(found[0].line, 3);
    }

    #[test]
    fn background_ampersand_ends_the_command() {
        let md = "```sh\ncvbench run --backend container --workload idle --hold 30s &\n```\n";
        let q = quoted_commands(md).remove(0).unwrap();
        assert_eq!(q.words.last().map(String::as_str), Some("30s"));
    }
}
