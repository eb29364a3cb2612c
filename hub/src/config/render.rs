//! The effective configuration as `--check-config` prints it: TOML, every
//! secret replaced by a marker, and passwords in NATS URLs hidden.

use super::{Config, REDACTED};

impl Config {
    /// The effective configuration as TOML, for `--check-config`, secrets
    /// redacted: its output ends up in terminals, CI logs and tickets.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted()).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    /// A copy without secrets: keys, passwords, tokens, and the password of
    /// a bus URL (`nats://user:secret@host`).
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        let hide = |v: &mut Option<String>| {
            if v.is_some() {
                *v = Some(REDACTED.to_string());
            }
        };
        hide(&mut c.publish_key);
        hide(&mut c.admin_key);
        hide(&mut c.operator_key);
        hide(&mut c.auth.secret);
        hide(&mut c.bus.password);
        hide(&mut c.bus.token);
        hide(&mut c.stats.key);
        if let Some(url) = &c.bus.url {
            c.bus.url = Some(redact_url_credentials(url));
        }
        c
    }
}

/// Each comma-separated URL with its userinfo's password (or token) replaced.
pub(crate) fn redact_url_credentials(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else {
                return url.to_string();
            };
            let host_start = rest.find(['/', '?']).unwrap_or(rest.len());
            match rest[..host_start].rfind('@') {
                Some(at) => {
                    let user = rest[..at].split(':').next().unwrap_or("");
                    let hidden = if rest[..at].contains(':') {
                        format!("{user}:{REDACTED}")
                    } else {
                        REDACTED.to_string()
                    };
                    format!("{scheme}://{hidden}{}", &rest[at..])
                }
                None => url.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
