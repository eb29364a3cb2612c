//! Where a hub's settings come from and how they combine: the built-in
//! defaults, then the TOML file, then `TRIBUNE_*` environment variables. Each
//! layer changes only the keys it names, so a partial `[namespaces.results]`
//! keeps the built-in mode and reactions, and `TRIBUNE_BUS__PASSWORD` sets
//! one key of `[bus]`. Errors say where the bad value came from:
//! `tribune.toml:12: limits.frames_burst: ...`, or the variable's name.
//!
//! Environment names: `TRIBUNE_` then the key path in capitals, sections
//! joined with `__` (`heartbeat_ms` → `TRIBUNE_HEARTBEAT_MS`, `[bus] password`
//! → `TRIBUNE_BUS__PASSWORD`, `[namespaces.results] retained` →
//! `TRIBUNE_NAMESPACES__RESULTS__RETAINED`). A value is read as the type the
//! key has: booleans also as `1`/`0`/`yes`/`no`/`on`/`off`, lists as TOML
//! arrays or comma-separated. Variables whose first part names no setting
//! (`TRIBUNE_CONFIG`, `TRIBUNE_NATS`, a test harness's own) are not settings
//! and are left to whoever reads them.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

use crate::error::{ConfigError, ConfigErrorKind};

/// Environment variables read by the command line, not settings.
const NOT_SETTINGS: [&str; 3] = ["TRIBUNE_CONFIG", "TRIBUNE_NATS", "TRIBUNE_CHECK_CONFIG"];

/// Where a key's value came from, for error messages.
enum Origin {
    File { path: String, line: Option<usize> },
    Env(String),
}

/// The configuration from `defaults`, the file (`path`, `text`) and the
/// environment's `TRIBUNE_*` variables, later layers winning key by key.
pub(crate) fn layered<C: Serialize + DeserializeOwned>(
    defaults: &C,
    file: Option<(&Path, &str)>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<C, ConfigError> {
    let mut table = Table::try_from(defaults)
        .map_err(|e| ConfigError::new(ConfigErrorKind::Invalid, e.to_string()))?;
    let schema = table.clone();
    let sections = top_level_keys::<C>();
    let mut from_env: Vec<(Vec<String>, String)> = Vec::new();

    if let Some((path, text)) = file {
        let parsed: Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map(|s| line_of(text, s.start));
            located(&display(path), line, None, e.message())
        })?;
        merge(&mut table, parsed);
    }
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("TRIBUNE_") else {
            continue;
        };
        if NOT_SETTINGS.contains(&name.as_str()) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if !sections.iter().any(|s| *s == path[0]) || path.iter().any(String::is_empty) {
            continue;
        }
        let value = typed(lookup(&schema, &path), &raw)
            .map_err(|why| ConfigError::new(ConfigErrorKind::Invalid, format!("{name}: {why}")))?;
        set(&mut table, &path, value);
        from_env.push((path, name));
    }

    C::deserialize(table).map_err(|e| {
        // toml names the key on a line of its own: "... \nin `limits.max`".
        let text = e.to_string();
        let (message, key) = match text.rsplit_once("\nin `") {
            Some((m, k)) => (
                m.trim().to_string(),
                Some(k.trim().trim_end_matches('`').to_string()),
            ),
            None => (text.trim().to_string(), None),
        };
        // An unknown key is reported at its table: name the key itself.
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            .map(String::from);
        let key = match (key, unknown) {
            (Some(table), Some(field)) => Some(format!("{table}.{field}")),
            (None, Some(field)) => Some(field),
            (key, None) => key,
        };
        let origin = key.as_deref().and_then(|key| {
            let parts: Vec<&str> = key.split('.').collect();
            let env = from_env
                .iter()
                .find(|(p, _)| p.iter().map(String::as_str).eq(parts.iter().copied()));
            match (env, file) {
                (Some((_, name)), _) => Some(Origin::Env(name.clone())),
                (None, Some((path, text))) => Some(Origin::File {
                    path: display(path),
                    line: line_of_key(text, &parts),
                }),
                (None, None) => None,
            }
        });
        match origin {
            Some(Origin::Env(name)) => {
                ConfigError::new(ConfigErrorKind::Malformed, format!("{name}: {message}"))
            }
            Some(Origin::File { path, line }) => located(&path, line, key.as_deref(), &message),
            None => ConfigError::new(
                ConfigErrorKind::Malformed,
                match key {
                    Some(k) => format!("{k}: {message}"),
                    None => message,
                },
            ),
        }
    })
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// `path:line: key: message`, each part when known.
fn located(path: &str, line: Option<usize>, key: Option<&str>, message: &str) -> ConfigError {
    let mut text = path.to_string();
    if let Some(line) = line {
        text.push_str(&format!(":{line}"));
    }
    if let Some(key) = key {
        text.push_str(&format!(": {key}"));
    }
    ConfigError::new(ConfigErrorKind::Malformed, format!("{text}: {message}"))
}

/// The names of every top-level setting, optional ones included: from the
/// deserializer's own list of expected fields.
fn top_level_keys<C: DeserializeOwned>() -> Vec<String> {
    let mut probe = Table::new();
    probe.insert("\u{0}".into(), Value::Integer(0));
    let text = C::deserialize(probe)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    text.split('`')
        .skip(3)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// Deep merge: tables key by key, any other value replaced.
fn merge(base: &mut Table, layer: Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(l)) => merge(b, l),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn lookup<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (last, sections) = path.split_last()?;
    let mut t = table;
    for s in sections {
        t = t.get(s)?.as_table()?;
    }
    t.get(last)
}

fn set(table: &mut Table, path: &[String], value: Value) {
    let (last, sections) = path.split_last().expect("a path has a key");
    let mut t = table;
    for s in sections {
        let entry = t
            .entry(s.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        t = entry.as_table_mut().expect("made a table");
    }
    t.insert(last.clone(), value);
}

/// An environment value read as the type the key has (`like`), or, for a
/// key without a default (optional settings), as a TOML value when it is
/// one and a string otherwise.
fn typed(like: Option<&Value>, raw: &str) -> Result<Value, String> {
    let trimmed = raw.trim();
    match like {
        Some(Value::Boolean(_)) => match trimmed.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Value::Boolean(true)),
            "0" | "false" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected a boolean (1/0, true/false), got '{raw}'")),
        },
        Some(Value::Integer(_)) => trimmed
            .replace('_', "")
            .parse()
            .map(Value::Integer)
            .map_err(|_| format!("expected an integer, got '{raw}'")),
        Some(Value::Float(_)) => trimmed
            .parse()
            .map(Value::Float)
            .map_err(|_| format!("expected a number, got '{raw}'")),
        Some(Value::Array(_)) => {
            if trimmed.starts_with('[') {
                literal(trimmed).ok_or_else(|| format!("expected a TOML array, got '{raw}'"))
            } else {
                Ok(Value::Array(
                    trimmed
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                ))
            }
        }
        Some(Value::Table(_)) => Err("names a section, not a setting".into()),
        Some(_) => Ok(Value::String(raw.to_string())),
        None => Ok(literal(trimmed)
            .filter(|v| !v.is_table())
            .unwrap_or_else(|| Value::String(raw.to_string()))),
    }
}

/// `text` as one TOML value, if it is one.
fn literal(text: &str) -> Option<Value> {
    format!("v = {text}").parse::<Table>().ok()?.remove("v")
}

/// The 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where the file sets `key` (a path such as `limits.max`), by
/// following its `[section]` headers: the error comes from the merged
/// table, which keeps no positions.
fn line_of_key(text: &str, key: &[&str]) -> Option<usize> {
    let (leaf, sections) = key.split_last()?;
    let mut current: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let header = header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("");
            current = header
                .split('.')
                .map(|s| s.trim().trim_matches('"').to_string())
                .collect();
            continue;
        }
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        let mut path = current.clone();
        path.extend(
            name.trim()
                .split('.')
                .map(|s| s.trim().trim_matches('"').to_string()),
        );
        if path.len() == key.len()
            && path.last().map(String::as_str) == Some(*leaf)
            && path.iter().zip(sections.iter()).all(|(a, b)| a == b)
        {
            return Some(i + 1);
        }
    }
    None
}
