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

    /// The whole-file issue for a TOML or schema error reported by the parser.
    pub(crate) fn toml_issue(&self, err: &toml::de::Error) -> ConfigIssue {
        let span = err.span().unwrap_or(0..0);
        let (line, column) = if err.span().is_some() {
            self.position(span.start)
        } else {
            (0, 0)
        };
        let message = err.message().trim().to_owned();
        let key_text = self
            .text
            .get(span.clone())
            .map(|k| k.trim().trim_matches('"').to_owned())
            .unwrap_or_default();
        let table = self.table_at(span.start);
        let (key, message) = match message.strip_prefix("unknown field `") {
            Some(rest) => {
                let field = rest.split('`').next().unwrap_or(&key_text).to_owned();
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
                let key = match (&table, key_text.is_empty() || key_text.contains('\n')) {
                    (Some(t), false) if !key_text.starts_with('[') => format!("{t}: `{key_text}`"),
                    (Some(t), _) => t.clone(),
                    (None, _) => String::new(),
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
}
