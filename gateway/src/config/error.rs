//! Config errors that point at the file, line, column and key they are about.

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

    /// The `[table]` header in force at a byte offset, for naming the table of an unknown key.
    pub(crate) fn table_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        self.text[..offset].lines().rev().find_map(|line| {
            let t = line.trim();
            let inner = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]"));
            let inner = inner.or_else(|| t.strip_prefix('[').and_then(|r| r.split(']').next()));
            inner.map(|s| s.trim().to_owned())
        })
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
}
