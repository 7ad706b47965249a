//! Config errors that point at the file, line, column and key they are about.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (e.g. the file cannot be read).
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `sources.ledger.secrets[0]`; empty when unknown.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in one pass over a config.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Turns byte spans of one file into line/column positions.
#[derive(Debug)]
pub(crate) struct SourceText<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
}

impl SourceText<'_> {
    /// 1-based line and column of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }

    pub(crate) fn issue(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigIssue {
        let (line, column) = self.position(span.start);
        ConfigIssue {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key path of the table in force at a byte offset, for naming the table of a schema
    /// error: the last `[table]` header (the offset's own line included, since a missing-key
    /// error points at the header), with `[n]` after each `[[array]]` entry it is in, then any
    /// inline tables (`key = { ... }`) still open at the offset. E.g. `routes[1].match`.
    pub(crate) fn table_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        // Entries seen so far of each array of tables, by dotted name.
        let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
        let mut header: Option<(String, usize)> = None;
        let mut line_start = 0;
        for line in self.text[..line_end].split_inclusive('\n') {
            let t = line.trim();
            let array = t.strip_prefix("[[").and_then(|r| r.split("]]").next());
            let table = array.or_else(|| t.strip_prefix('[').and_then(|r| r.split(']').next()));
            if let Some(name) = table {
                let name = dotted(name);
                if array.is_some() {
                    *arrays.entry(name.clone()).or_default() += 1;
                }
                header = Some((name, line_start + line.len()));
            }
            line_start += line.len();
        }
        let mut path = String::new();
        let body_start = header.as_ref().map_or(0, |(_, end)| (*end).min(offset));
        if let Some((name, _)) = header {
            let mut prefix = String::new();
            for segment in name.split('.') {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(segment);
                push_segment(&mut path, segment);
                if let Some(n) = arrays.get(&prefix) {
                    path.push_str(&format!("[{}]", n.saturating_sub(1)));
                }
            }
        }
        for key in open_inline_tables(&self.text[body_start..offset]) {
            push_segment(&mut path, &key);
        }
        (!path.is_empty()).then_some(path)
    }

    /// The full key path of what is written at a byte offset: the table in force (see
    /// [`Self::table_at`]), then the keys and array positions leading to the value the offset
    /// is in, or to the key that starts there. E.g. `sources.ledger.secrets[1]`.
    pub(crate) fn key_path_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let (header, below) = value_path(&self.text[..offset], &self.text[offset..]);
        let mut path: Vec<String> = header.and_then(|h| self.table_at(h)).into_iter().collect();
        path.extend(below);
        (!path.is_empty()).then(|| path.join(".").replace(".[", "["))
    }

    /// The whole-file issue for a TOML or schema error reported by the parser.
    pub(crate) fn toml_issue(&self, err: &toml::de::Error) -> ConfigIssue {
        let span = err.span().unwrap_or(0..0);
        let (line, column) = if err.span().is_some() {
            self.position(span.start)
        } else {
            (0, 0)
        };
        let message = err.message().trim().to_owned();
        let written = self
            .text
            .get(span.clone())
            .map(|k| k.trim().trim_matches('"').to_owned())
            .unwrap_or_default();
        let table = self.table_at(span.start);
        let (key, message) = match message.strip_prefix("unknown field `") {
            Some(rest) => {
                let field = rest.split('`').next().unwrap_or(&written).to_owned();
                let key = match &table {
                    Some(t) => format!("{t}.{field}"),
                    None => field.clone(),
                };
                let where_ = table.map(|t| format!(" in [{t}]")).unwrap_or_default();
                let expected = rest.split_once(", ").map(|(_, e)| format!(" ({e})"));
                (
                    key,
                    format!(
                        "unknown key `{field}`{where_}{}",
                        expected.unwrap_or_default()
                    ),
                )
            }
            None => {
                let key = self.key_path_at(span.start).or(table).unwrap_or_default();
                let shown = !written.is_empty()
                    && !written.contains('\n')
                    && !written.starts_with('[')
                    && !key.ends_with(&written);
                let message = if holds_secret(&key) {
                    // What is written at a key that holds a secret is never echoed, whatever
                    // the parser found wrong with it: it may be the secret, inline or
                    // half-quoted.
                    let message = if !written.is_empty() && message.contains(&written) {
                        "invalid value".to_owned()
                    } else {
                        message
                    };
                    format!("{message} (the value is not shown, since this key holds a secret)")
                } else if shown {
                    format!("`{written}`: {message}")
                } else {
                    message
                };
                (key, message)
            }
        };
        ConfigIssue {
            file: self.file.to_path_buf(),
            line,
            column,
            key,
            message,
        }
    }
}

/// Whether the value at a key path (as [`SourceText::key_path_at`] writes it) is, or is part
/// of, a secret: signing secrets, tokens, credentials, a destination's URL (its query may
/// carry a token) and the store's database URL (it may carry a password).
pub(crate) fn holds_secret(path: &str) -> bool {
    let segments: Vec<&str> = path
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s))
        .collect();
    matches!(
        segments.as_slice(),
        ["sources", _, "secrets" | "token" | "basic_auth", ..]
            | ["admin", "token", ..]
            | ["admin", "tokens", "token", ..]
            | ["store", "url", ..]
            | ["destinations", _, "secret" | "http", ..]
    )
}

/// Where the last table header of `text` starts (`None`: the top-level table), and the keys
/// (and `[n]` array positions) leading from that table to the value being written at the end
/// of `text`, outermost first; when the end is where a key starts, that key (read from `rest`,
/// the text after it) ends the path. A small scanner like [`open_inline_tables`]: it skips
/// strings and comments and pairs brackets, and takes a `[` for a header only where a key could
/// start at the top level (not on a line of a multi-line array).
fn value_path(text: &str, rest: &str) -> (Option<usize>, Vec<String>) {
    /// One open level: the table body, an inline table or an array.
    enum Level {
        /// The key whose value is being written, once its `=` is seen.
        Table {
            key: Option<String>,
            inline: bool,
        },
        Array {
            index: usize,
        },
    }
    let top = || Level::Table {
        key: None,
        inline: false,
    };
    let mut levels = vec![top()];
    let mut header = None;
    let mut pending_key = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    // In a table (not an array) before its `=`: reading a key.
    let in_key = |levels: &[Level]| matches!(levels.last(), Some(Level::Table { key: None, .. }));
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                let start = i;
                i = skip_string(bytes, i);
                if in_key(&levels) {
                    pending_key.push_str(&text[start..i]);
                }
                continue;
            }
            b'[' if levels.len() == 1 && in_key(&levels) && pending_key.trim().is_empty() => {
                header = Some(i);
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                levels = vec![top()];
                pending_key.clear();
                continue;
            }
            _ => {}
        }
        if in_key(&levels) {
            match b {
                b'=' => {
                    let key = std::mem::take(&mut pending_key);
                    if let Some(Level::Table { key: k, .. }) = levels.last_mut() {
                        *k = Some(key);
                    }
                }
                b'}' => {
                    if levels.len() > 1 {
                        levels.pop();
                    }
                    pending_key.clear();
                }
                b'\n' | b',' => pending_key.clear(),
                _ => pending_key.push(char::from(b)),
            }
        } else {
            match b {
                b'{' => levels.push(Level::Table {
                    key: None,
                    inline: true,
                }),
                b'[' => levels.push(Level::Array { index: 0 }),
                b']' => {
                    if matches!(levels.last(), Some(Level::Array { .. })) {
                        levels.pop();
                    }
                }
                b'}' => {
                    if matches!(levels.last(), Some(Level::Table { inline: true, .. })) {
                        levels.pop();
                    }
                }
                b',' => match levels.last_mut() {
                    Some(Level::Array { index }) => *index += 1,
                    Some(Level::Table { key, inline: true }) => *key = None,
                    _ => {}
                },
                b'\n' => {
                    if let Some(Level::Table { key, inline: false }) = levels.last_mut() {
                        *key = None;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    let mut path = Vec::new();
    for level in &levels {
        match level {
            Level::Table { key: Some(k), .. } => path.extend(key_segments(k)),
            Level::Table { key: None, .. } => {}
            Level::Array { index } => path.push(format!("[{index}]")),
        }
    }
    if in_key(&levels) && levels.len() == 1 && rest.trim_start().starts_with('[') {
        // A table header starts here: the path is its table's.
        return (Some(text.len()), Vec::new());
    }
    if in_key(&levels) {
        let rest_key = rest.split(['=', '\n', ',', '}']).next().unwrap_or_default();
        pending_key.push_str(rest_key);
        path.extend(key_segments(&pending_key));
    }
    (header, path)
}

/// The byte after the string (basic, literal or multi-line) that starts at `start`, or the end.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let triple = bytes.get(start..start + 3) == Some(&[quote; 3][..]);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        if quote == b'"' && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if triple {
            if bytes.get(i..i + 3) == Some(&[quote; 3][..]) {
                return i + 3;
            }
        } else if bytes[i] == quote {
            return i + 1;
        } else if bytes[i] == b'\n' {
            // Unterminated: the line break still ends the line.
            return i;
        }
        i += 1;
    }
    bytes.len()
}

/// The segments of a (possibly dotted, possibly quoted) key as written: `a."b.c"` is `a`, `b.c`.
fn key_segments(key: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    for c in key.trim().chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '.') => segments.push(std::mem::take(&mut current)),
            (None, c) if c.is_whitespace() => {}
            (_, c) => current.push(c),
        }
    }
    segments.push(current);
    segments.retain(|s| !s.is_empty());
    segments
}

/// A header's name with the spaces TOML allows around its dots removed: `a . b` is `a.b`.
fn dotted(name: &str) -> String {
    name.split('.').map(str::trim).collect::<Vec<_>>().join(".")
}

fn push_segment(path: &mut String, segment: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(segment);
}

/// The keys of the inline tables open at the end of `body` (the text after a table header),
/// outermost first. A small scanner rather than a parser: it skips strings and comments and
/// pairs braces, which is all that naming an error's table needs. An inline table inside an
/// array has no key of its own and adds nothing.
fn open_inline_tables(body: &str) -> Vec<String> {
    let bytes = body.as_bytes();
    let mut open: Vec<Option<String>> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    // Only basic strings ("...") have escapes.
                    if quote == b'"' && bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'{' => {
                let before = body[..i].trim_end();
                let key = before.strip_suffix('=').map(|k| {
                    let k = k.trim_end();
                    let start = k
                        .rfind(|c: char| c.is_whitespace() || c == '{' || c == ',')
                        .map_or(0, |p| p + 1);
                    k[start..].trim_matches('"').to_owned()
                });
                open.push(key);
            }
            b'}' => {
                open.pop();
            }
            _ => {}
        }
        i += 1;
    }
    open.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let st = SourceText {
            file: Path::new("x.toml"),
            text: "a = 1\n[server]\nlisen = 2\n",
        };
        assert_eq!(st.position(0), (1, 1));
        assert_eq!(st.position(15), (3, 1));
        assert_eq!(st.table_at(15).as_deref(), Some("server"));
    }

    #[test]
    fn table_paths_count_array_entries_and_open_inline_tables() {
        let text = "[[routes]]\nto = [\"a\"]\n[[routes]]\nmatch = { type = \"}{\", sorce = 1 }\n\
                    [routes.match]\nx = 1\n";
        let st = SourceText {
            file: Path::new("x.toml"),
            text,
        };
        let at = |needle: &str| text.find(needle).map(|o| st.table_at(o));
        assert_eq!(at("to ="), Some(Some("routes[0]".into())));
        // The header's own line: a missing key is reported at the header.
        assert_eq!(st.table_at(0).as_deref(), Some("routes[0]"));
        assert_eq!(at("sorce"), Some(Some("routes[1].match".into())));
        assert_eq!(at("x = 1"), Some(Some("routes[1].match".into())));
    }

    #[test]
    fn key_paths_follow_keys_inline_tables_and_array_positions() {
        let text = "top = 1\n[sources.l]\nsecrets = [\n  \"env:A\", # a ] comment\n  \"b]\",\n  \
                    [\"c\"],\n]\nbasic_auth = { username = \"u\", password = \"p\" }\n\
                    a.\"b.c\" = 2\n[[routes]]\nto = [\"x\"]\n";
        let st = SourceText {
            file: Path::new("x.toml"),
            text,
        };
        let at = |needle: &str| {
            let offset = text.find(needle).unwrap_or_else(|| panic!("{needle}"));
            st.key_path_at(offset)
        };
        assert_eq!(at("1\n").as_deref(), Some("top"));
        assert_eq!(at("top").as_deref(), Some("top"));
        assert_eq!(at("\"env:A").as_deref(), Some("sources.l.secrets[0]"));
        assert_eq!(at("\"b]").as_deref(), Some("sources.l.secrets[1]"));
        // `[` on a line of a multi-line array is not a table header.
        assert_eq!(at("\"c\"").as_deref(), Some("sources.l.secrets[2][0]"));
        assert_eq!(
            at("\"u\"").as_deref(),
            Some("sources.l.basic_auth.username")
        );
        assert_eq!(
            at("\"p\"").as_deref(),
            Some("sources.l.basic_auth.password")
        );
        assert_eq!(at("2\n").as_deref(), Some("sources.l.a.b.c"));
        assert_eq!(at("[[routes]]").as_deref(), Some("routes[0]"));
        assert_eq!(at("\"x\"").as_deref(), Some("routes[0].to[0]"));
        assert!(holds_secret("sources.l.secrets[2][0]"));
        assert!(holds_secret("sources.l.basic_auth.username"));
        assert!(holds_secret("destinations.d.http"));
        assert!(holds_secret("store.url"));
        assert!(!holds_secret("store.pool_size"));
        assert!(!holds_secret("sources.l.token_header"));
        assert!(!holds_secret("routes[0].to[0]"));
    }
}
