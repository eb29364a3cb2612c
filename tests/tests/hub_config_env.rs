//! Every key of the README's configuration reference can be set from the
//! environment (`TRIBUNE_<SECTION>__<KEY>`), checked on the real binary with
//! `--check-config`. The keys come from the README itself, so a key added
//! there without working through the environment fails here.

use std::process::Command;

use toml::{Table, Value};

/// The README's reference: the TOML block under "## Configuration".
fn reference() -> Table {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Configuration")
        .nth(1)
        .expect("README has a Configuration section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block");
    block.parse().expect("the README's reference is valid TOML")
}

/// Every leaf of `table` as (path, value).
fn leaves(table: &Table, prefix: &[String], out: &mut Vec<(Vec<String>, Value)>) {
    for (k, v) in table {
        let mut path = prefix.to_vec();
        path.push(k.clone());
        match v {
            Value::Table(t) => leaves(t, &path, out),
            v => out.push((path, v.clone())),
        }
    }
}

fn env_name(path: &[String]) -> String {
    let joined: Vec<String> = path.iter().map(|p| p.to_ascii_uppercase()).collect();
    format!("TRIBUNE_{}", joined.join("__"))
}

/// What the check prints for the value the test sets.
enum Expect {
    /// The printed configuration holds this value at the key.
    Value(Value),
    /// A file setting naming a file that does not exist: refused, naming it.
    RefusedNaming(String),
    /// A secret: accepted; its value must not matter here (redaction is the
    /// edge's rule), but the key must be set.
    Accepted,
}

/// Other variables a key needs beside it to make a valid configuration.
fn companions(path: &[String]) -> &'static [(&'static str, &'static str)] {
    match path.join(".").as_str() {
        "auth.algorithm" | "auth.audience" | "auth.issuer" => &[(
            "TRIBUNE_AUTH__SECRET",
            "companion-secret-0123456789abcdef0123",
        )],
        "auth.public_key_file" | "auth.jwks_file" => &[("TRIBUNE_AUTH__ALGORITHM", "ES256")],
        "proxy_protocol" => &[("TRIBUNE_TRUSTED_PROXIES", "10.0.0.0/8")],
        "bus.mirror_api" => &[("TRIBUNE_BUS__MIRROR_OF", "TRIBUNE_ORIGIN")],
        "tls.cert_file" => &[("TRIBUNE_TLS__KEY_FILE", "/nonexistent/tribune-env-test.pem")],
        "tls.key_file" => &[(
            "TRIBUNE_TLS__CERT_FILE",
            "/nonexistent/tribune-env-test.pem",
        )],
        _ => &[],
    }
}

/// A value for `path` that differs from the reference's `default`, as the
/// environment spells it, and what the check must show.
fn probe(path: &[String], default: &Value) -> (String, Expect) {
    let key = path.join(".");
    match key.as_str() {
        "listen" | "internal_listen" => {
            return (
                "127.0.0.1:18181".into(),
                Expect::Value(Value::String("127.0.0.1:18181".into())),
            );
        }
        "auth.algorithm" => return ("HS256".into(), Expect::Value(Value::String("HS256".into()))),
        "log_format" => return ("json".into(), Expect::Value(Value::String("json".into()))),
        "bus.storage" => {
            return (
                "memory".into(),
                Expect::Value(Value::String("memory".into())),
            );
        }
        "bus.url" => {
            let url = "nats://127.0.0.1:4999";
            return (url.into(), Expect::Value(Value::String(url.into())));
        }
        k if k.ends_with("_file") || k == "bus.credentials" => {
            let missing = "/nonexistent/tribune-env-test.pem";
            return (missing.into(), Expect::RefusedNaming(missing.into()));
        }
        k if k.ends_with("secret")
            || k.ends_with("password")
            || k.ends_with("token") && !k.starts_with("namespaces")
            || k.ends_with("_key")
            || k.ends_with(".key") =>
        {
            return (
                "env-secret-value-0123456789abcdef0123456789".into(),
                Expect::Accepted,
            );
        }
        k if k.ends_with(".mode") => {
            let other = if default.as_str() == Some("state") {
                "feed"
            } else {
                "state"
            };
            return (other.into(), Expect::Value(Value::String(other.into())));
        }
        k if k.ends_with("reactions") => {
            return (
                "👍,🎉".into(),
                Expect::Value(Value::Array(vec!["👍".into(), "🎉".into()])),
            );
        }
        "allowed_origins" => {
            return (
                "https://a.example".into(),
                Expect::Value(Value::Array(vec!["https://a.example".into()])),
            );
        }
        "trusted_proxies" => {
            return (
                "10.1.2.3".into(),
                Expect::Value(Value::Array(vec!["10.1.2.3".into()])),
            );
        }
        _ => {}
    }
    match default {
        Value::Boolean(b) => {
            let spelled = if *b { "0" } else { "1" };
            (spelled.into(), Expect::Value(Value::Boolean(!b)))
        }
        Value::Integer(n) => {
            let v = if *n > 1 { n - 1 } else { n + 1 };
            (v.to_string(), Expect::Value(Value::Integer(v)))
        }
        Value::String(_) => (
            "envvalue".into(),
            Expect::Value(Value::String("envvalue".into())),
        ),
        other => panic!("{key}: no probe for a README default of this type: {other:?}"),
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

#[test]
fn every_readme_key_is_settable_from_the_environment() {
    let reference = reference();
    let mut keys = Vec::new();
    leaves(&reference, &[], &mut keys);
    assert!(
        keys.len() > 40,
        "the reference lists the keys: {}",
        keys.len()
    );
    let mut failures = Vec::new();
    for (path, default) in &keys {
        let name = env_name(path);
        let (value, expect) = probe(path, default);
        let out = Command::new(tribune_tests::hub::binary())
            .arg("--check-config")
            .env(&name, &value)
            .envs(companions(path).iter().copied())
            .output()
            .expect("the hub runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let verdict = match expect {
            Expect::Value(want) => {
                if !out.status.success() {
                    Err(format!("refused: {stderr}"))
                } else {
                    let printed: Table = stdout.parse().expect("--check-config prints TOML");
                    match lookup(&printed, path) {
                        Some(got) if *got == want => Ok(()),
                        got => Err(format!("printed {got:?}, wanted {want:?}")),
                    }
                }
            }
            Expect::RefusedNaming(file) => {
                if out.status.code() == Some(2) && stderr.contains(&file) {
                    Ok(())
                } else {
                    Err(format!(
                        "not refused naming {file}: {:?} {stderr}",
                        out.status
                    ))
                }
            }
            Expect::Accepted => {
                let printed: Option<Table> = stdout.parse().ok();
                match printed.as_ref().and_then(|p| lookup(p, path)) {
                    Some(_) if out.status.success() => Ok(()),
                    _ => Err(format!("not set: {:?} {stderr}", out.status)),
                }
            }
        };
        if let Err(why) = verdict {
            failures.push(format!("{name}={value}: {why}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn booleans_and_errors_name_their_variable() {
    let run = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(tribune_tests::hub::binary());
        cmd.arg("--check-config");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().expect("the hub runs")
    };
    let out = run(&[("TRIBUNE_DEMO", "1")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo = true"));
    let out = run(&[("TRIBUNE_HEARTBEAT_MS", "25s")]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "tribune-hub: TRIBUNE_HEARTBEAT_MS: expected an integer, got '25s'"
    );
    let file = tribune_tests::hub::ConfigFile::new("\n[limits]\nframes_burst = \"40\"\n");
    let out = Command::new(tribune_tests::hub::binary())
        .args(["--check-config", "--config", file.path()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3: limits.frames_burst: invalid type",
            file.path()
        )),
        "{stderr}"
    );
}

/// `--print-config`: the effective configuration, every layer merged, with
/// defaults filled in and secrets redacted, without reading the files it
/// names (a key file that only exists on the node).
#[test]
fn print_config_shows_every_layer_and_no_secret() {
    let file = tribune_tests::hub::ConfigFile::new(
        "heartbeat_ms = 1000\n[auth]\nalgorithm = \"ES256\"\npublic_key_file = \"/only/on/the/node.pem\"\n",
    );
    let out = Command::new(tribune_tests::hub::binary())
        .args(["--print-config", "--config", file.path()])
        .env("TRIBUNE_BUS__PASSWORD", "print-config-secret-value")
        .env("TRIBUNE_LIMITS__FRAMES_BURST", "77")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Table = stdout.parse().expect("TOML");
    assert_eq!(
        printed["heartbeat_ms"].as_integer(),
        Some(1000),
        "from the file"
    );
    assert_eq!(
        printed["limits"]["frames_burst"].as_integer(),
        Some(77),
        "from the environment"
    );
    assert_eq!(
        printed["limits"]["frames_per_second"].as_integer(),
        Some(20),
        "a default"
    );
    assert!(printed["bus"].get("password").is_some(), "the key is shown");
    assert!(!stdout.contains("print-config-secret-value"), "{stdout}");
    // --check-config reads the key file, and refuses the missing one.
    let out = Command::new(tribune_tests::hub::binary())
        .args(["--check-config", "--config", file.path()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
