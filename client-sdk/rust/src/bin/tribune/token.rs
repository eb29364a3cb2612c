//! `tribune token`: mint an HS256 fan token for development and tests, in
//! the shape the hub verifies (hub/src/auth.rs, PROTOCOL.md section 1):
//! `topics` (exact topics or prefixes), `exp`, `iat`, and optionally `sub`
//! and `aud`. Production tokens come from the operator's login or ticketing
//! service; this is the developer's shortcut, like Centrifugo's `gentoken`.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use tribune_protocol::{TopicError, validate_topic};

use crate::{Failure, runtime, usage};

/// Where the secret comes from when neither flag gives it.
const SECRET_ENV: &str = "TRIBUNE_TOKEN_SECRET";

/// Shortest secret a hub accepts (RFC 7518 section 3.2: at least the hash
/// size); a token signed with less could never be verified.
const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Args)]
#[command(
    after_help = "The secret is the hub's [auth] secret. Prefer --secret-file or \
    the TRIBUNE_TOKEN_SECRET environment variable to --secret: a command line is visible \
    to other users of the machine and stays in shell history. The first given of --secret, \
    --secret-file and TRIBUNE_TOKEN_SECRET is used.\n\n\
    Example: tribune token --secret-file hub.secret --topics premium.lausanne2020. --ttl 2h"
)]
pub(crate) struct TokenArgs {
    /// Topics the token grants: exact topics or prefixes of whole tokens
    /// (`premium.lausanne2020.` covers every topic under it), comma-separated
    /// or repeated.
    #[arg(long, required = true, value_delimiter = ',')]
    topics: Vec<String>,
    /// Lifetime: seconds, or a number with s, m, h or d (90s, 15m, 2h, 7d).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// The `sub` claim: who the fan is (the hub shows it in its logs).
    #[arg(long)]
    sub: Option<String>,
    /// The `aud` claim, for a hub configured with `[auth] audience`.
    #[arg(long)]
    aud: Option<String>,
    /// The HS256 secret itself (see below for safer ways to give it).
    #[arg(long, conflicts_with = "secret_file")]
    secret: Option<String>,
    /// A file holding the secret (a trailing newline is ignored); `-` reads
    /// standard input.
    #[arg(long)]
    secret_file: Option<PathBuf>,
}

/// The claims the hub reads.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    iat: u64,
    exp: u64,
    topics: &'a [String],
}

pub(crate) fn run(args: TokenArgs) -> Result<(), Failure> {
    for grant in &args.topics {
        check_grant(grant).map_err(|e| usage(format!("invalid topic grant '{grant}': {e}")))?;
    }
    let secret = read_secret(&args)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| runtime("the system clock is before 1970"))?
        .as_secs();
    let token = mint(&args, &secret, now)?;
    println!("{token}");
    Ok(())
}

/// Signs the claims for `args` as issued at `now` (Unix seconds).
fn mint(args: &TokenArgs, secret: &[u8], now: u64) -> Result<String, Failure> {
    let claims = Claims {
        sub: args.sub.as_deref(),
        aud: args.aud.as_deref(),
        iat: now,
        exp: now + args.ttl.as_secs(),
        topics: &args.topics,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| runtime(format!("cannot sign the token: {e}")))
}

/// The secret from --secret, --secret-file or the environment, in that
/// order; refused when a hub could not use it.
fn read_secret(args: &TokenArgs) -> Result<Vec<u8>, Failure> {
    let secret = if let Some(secret) = &args.secret {
        secret.clone().into_bytes()
    } else if let Some(path) = &args.secret_file {
        let mut bytes = Vec::new();
        let read = if path.as_os_str() == "-" {
            std::io::stdin().lock().read_to_end(&mut bytes)
        } else {
            std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes))
        };
        read.map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        // Files written by editors and `echo` end with a newline that is not
        // part of the secret.
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        bytes
    } else if let Some(secret) = std::env::var_os(SECRET_ENV) {
        secret.into_encoded_bytes()
    } else {
        return Err(usage(format!(
            "give the hub's secret with --secret-file, {SECRET_ENV} or --secret"
        )));
    };
    if secret.len() < MIN_SECRET_BYTES {
        return Err(usage(format!(
            "the secret has {} bytes; hubs need at least {MIN_SECRET_BYTES} (RFC 7518 section 3.2)",
            secret.len()
        )));
    }
    Ok(secret)
}

/// A grant is a topic, or a prefix of whole tokens with an optional trailing
/// dot; a namespace alone (`premium`) is a prefix too, although it is not a
/// topic (too few tokens).
fn check_grant(grant: &str) -> Result<(), TopicError> {
    let prefix = grant.strip_suffix('.').unwrap_or(grant);
    match validate_topic(prefix) {
        Err(TopicError::TooFewTokens) => validate_topic(&format!("{prefix}.x")),
        other => other,
    }
}

/// `90`, `90s`, `15m`, `2h`, `7d`; at least one second.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 90s, 15m, 2h or 7d"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit '{unit}': use s, m, h or d")),
    };
    let secs = n
        .checked_mul(unit_secs)
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("'{text}' must be at least one second and fit in u64 seconds"))?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        token: TokenArgs,
    }

    fn args(line: &[&str]) -> TokenArgs {
        Cli::try_parse_from(std::iter::once("token").chain(line.iter().copied()))
            .unwrap()
            .token
    }

    fn part(token: &str, i: usize) -> serde_json::Value {
        let segment = token.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    }

    #[test]
    fn claims_are_the_hubs() {
        let secret = [7u8; 32];
        let a = args(&[
            "--topics",
            "premium.a.,results.x.y",
            "--topics",
            "clips",
            "--ttl",
            "15m",
            "--sub",
            "fan-1",
            "--aud",
            "tribune",
        ]);
        let token = mint(&a, &secret, 1_000).unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(part(&token, 0)["alg"], "HS256");
        assert_eq!(
            part(&token, 1),
            serde_json::json!({
                "sub": "fan-1", "aud": "tribune", "iat": 1_000, "exp": 1_900,
                "topics": ["premium.a.", "results.x.y", "clips"],
            })
        );
        // Without --sub and --aud the claims are absent, not null.
        let token = mint(&args(&["--topics", "premium.a"]), &secret, 0)
            .unwrap_or_else(|f| panic!("{}", f.message));
        let claims = part(&token, 1);
        assert!(claims.get("sub").is_none() && claims.get("aud").is_none());
        assert_eq!(claims["exp"], 3600);
    }

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        for bad in [
            "",
            "0",
            "0s",
            "1w",
            "h",
            "-5",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grants() {
        for ok in [
            "premium",
            "premium.",
            "premium.a",
            "premium.a.",
            "a.b.c.d.e.f.g.h",
        ] {
            assert_eq!(check_grant(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "premium.*", "premium..a", "a b.c"] {
            assert!(check_grant(bad).is_err(), "{bad:?}");
        }
    }
}
