//! The seed's settings.py: `servers = {"name": "host:port", ...}`, read without executing it.

use std::fmt;
use std::path::Path;

use super::file::{bad_host_id, read_bounded};
use super::values::check_pull_addr;
use super::{ConfigError, PullTarget};
use crate::state::valid_host_id;

/// A settings.py that does not have the seed's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct SettingsPyError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// One `"name": "host:port"` entry of settings.py, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsPyEntry {
    pub target: PullTarget,
    pub line: usize,
}

/// Parses the seed's `settings.py`: blank lines, `#` comments and exactly one assignment
/// `servers = {"name": "host:port", ...}` (single or double quotes, over several lines,
/// trailing comma allowed). Nothing is executed; anything else is refused with its line, so a
/// file that relies on Python (variables, f-strings, imports) fails loudly instead of being
/// half-read.
pub fn parse_settings_py(text: &str) -> Result<Vec<SettingsPyEntry>, SettingsPyError> {
    let tokens = py_tokens(text)?;
    let mut it = tokens.into_iter().peekable();
    let mut expect = |want: &PyTok, what: &str| -> Result<(), SettingsPyError> {
        match it.next() {
            Some(t) if t.tok == *want => Ok(()),
            Some(t) => Err(t.err(format!("expected {what}, found {}", t.tok))),
            None => Err(SettingsPyError {
                line: text.lines().count().max(1),
                column: 1,
                message: format!("expected {what}, found the end of the file"),
            }),
        }
    };
    expect(
        &PyTok::Ident("servers".into()),
        "`servers = {...}` (the only statement understood)",
    )?;
    expect(&PyTok::Eq, "`=`")?;
    expect(&PyTok::Open, "`{`")?;

    let mut entries: Vec<SettingsPyEntry> = Vec::new();
    let eof = |message: &str| SettingsPyError {
        line: text.lines().count().max(1),
        column: 1,
        message: message.to_owned(),
    };
    loop {
        let t = it
            .next()
            .ok_or_else(|| eof("the `servers` dict is not closed with `}`"))?;
        let (name, line, column) = match t.tok {
            PyTok::Close => break,
            PyTok::Str(s) => (s, t.line, t.column),
            other => {
                return Err(t_err(
                    t.line,
                    t.column,
                    format!("expected a quoted host name or `}}`, found {other}"),
                ))
            }
        };
        let colon = it
            .next()
            .ok_or_else(|| eof("expected `:`, found the end of the file"))?;
        if colon.tok != PyTok::Colon {
            return Err(colon.err(format!("expected `:`, found {}", colon.tok)));
        }
        let v = it
            .next()
            .ok_or_else(|| eof("expected an address, found the end of the file"))?;
        let addr = match v.tok {
            PyTok::Str(s) => s,
            other => {
                return Err(t_err(
                    v.line,
                    v.column,
                    format!("expected a quoted \"host:port\", found {other}"),
                ))
            }
        };
        if !valid_host_id(&name) {
            return Err(t_err(line, column, bad_host_id(&name)));
        }
        check_pull_addr(&addr).map_err(|m| t_err(v.line, v.column, m))?;
        if let Some(first) = entries.iter().find(|e| e.target.id == name) {
            return Err(t_err(
                line,
                column,
                format!(
                    "host name {name:?} is listed twice (first on line {})",
                    first.line
                ),
            ));
        }
        entries.push(SettingsPyEntry {
            target: PullTarget {
                id: name,
                addr,
                token: None,
            },
            line,
        });
        let sep = it
            .next()
            .ok_or_else(|| eof("the `servers` dict is not closed with `}`"))?;
        match &sep.tok {
            PyTok::Comma => {}
            PyTok::Close => break,
            other => return Err(sep.err(format!("expected `,` or `}}`, found {other}"))),
        }
    }
    if let Some(t) = it.next() {
        return Err(t.err(format!(
            "unexpected {} after the `servers` dict (only `servers = {{...}}` is understood)",
            t.tok
        )));
    }
    Ok(entries)
}

fn t_err(line: usize, column: usize, message: String) -> SettingsPyError {
    SettingsPyError {
        line,
        column,
        message,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PyTok {
    Ident(String),
    Str(String),
    Eq,
    Open,
    Close,
    Colon,
    Comma,
    /// Anything else (a number, a bracket, an operator): always an error, reported by the parser
    /// where it knows what was expected instead.
    Other(String),
}

impl fmt::Display for PyTok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PyTok::Ident(s) => write!(f, "`{s}`"),
            PyTok::Str(s) => write!(f, "the string {s:?}"),
            PyTok::Eq => f.write_str("`=`"),
            PyTok::Open => f.write_str("`{`"),
            PyTok::Close => f.write_str("`}`"),
            PyTok::Colon => f.write_str("`:`"),
            PyTok::Comma => f.write_str("`,`"),
            PyTok::Other(s) => write!(f, "`{s}`"),
        }
    }
}

struct PyToken {
    tok: PyTok,
    line: usize,
    column: usize,
}

impl PyToken {
    fn err(&self, message: String) -> SettingsPyError {
        t_err(self.line, self.column, message)
    }
}

fn py_tokens(text: &str) -> Result<Vec<PyToken>, SettingsPyError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut column) = (1usize, 1usize);
    while let Some(c) = chars.next() {
        let (tl, tc) = (line, column);
        column += 1;
        let simple = match c {
            '\n' => {
                line += 1;
                column = 1;
                continue;
            }
            c if c.is_whitespace() => continue,
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
                continue;
            }
            '=' => PyTok::Eq,
            '{' => PyTok::Open,
            '}' => PyTok::Close,
            ':' => PyTok::Colon,
            ',' => PyTok::Comma,
            '"' | '\'' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some(q) if q == c => {
                            column += 1;
                            break;
                        }
                        Some('\\') => {
                            return Err(t_err(
                                line,
                                column,
                                "backslash escapes are not supported in settings.py strings".into(),
                            ))
                        }
                        Some('\n') | None => {
                            return Err(t_err(tl, tc, "string not closed on its line".into()))
                        }
                        Some(ch) => {
                            column += 1;
                            s.push(ch);
                        }
                    }
                }
                if s.is_empty() && chars.peek() == Some(&c) {
                    return Err(t_err(
                        tl,
                        tc,
                        "triple-quoted strings are not supported".into(),
                    ));
                }
                PyTok::Str(s)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        s.push(n);
                        chars.next();
                        column += 1;
                    } else {
                        break;
                    }
                }
                PyTok::Ident(s)
            }
            c if c.is_ascii_alphanumeric() || c == '.' => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '.' || n == '_' {
                        s.push(n);
                        chars.next();
                        column += 1;
                    } else {
                        break;
                    }
                }
                PyTok::Other(s)
            }
            other => PyTok::Other(other.to_string()),
        };
        out.push(PyToken {
            tok: simple,
            line: tl,
            column: tc,
        });
    }
    Ok(out)
}

pub(super) fn read_settings_py(path: &Path) -> Result<Vec<SettingsPyEntry>, ConfigError> {
    let text = read_bounded(path)?;
    parse_settings_py(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        line: e.line,
        column: e.column,
        message: e.message,
    })
}
