//! The configuration's unit tests: defaults, files, layers, validation.

use std::path::Path;

use tribune_protocol::Mode;

use super::*;
use crate::error::ConfigErrorKind;

#[test]
fn references_outside_the_file_are_checked() {
    let check = |toml: &str| Config::from_toml(toml).unwrap().validate();
    let e = check("allowed_origins = [\"example.com\"]\n").unwrap_err();
    assert!(
        e.to_string().contains("'example.com' is not an origin"),
        "{e}"
    );
    assert!(check("allowed_origins = [\"https://example.com/app\"]\n").is_err());
    assert!(check("allowed_origins = [\"https://example.com:8443\"]\n").is_ok());
    let e = check("[bus]\nurl = \"nats://a:4222, localhost:4222\"\n").unwrap_err();
    assert!(e.to_string().contains("server 2 of the list"), "{e}");
    assert!(check("[bus]\nurl = \"nats://a:4222,tls://b:4222\"\n").is_ok());
    // Key files are read with the other key files (`--print-config` reads
    // none): the bus's by `bus::nats::settings`, the statistics key's by
    // `key_bytes`.
    let missing = Config::from_toml("[stats]\nkey_file = \"/nonexistent/stats.key\"\n").unwrap();
    assert!(missing.validate().is_ok());
    let e = missing.stats.key_bytes().unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Unreadable);
    let e = check("[stats]\nkey = \"short\"\n").unwrap_err();
    assert!(e.to_string().contains("at least 32 bytes"), "{e}");
    assert!(
        !e.to_string().contains("short"),
        "the key is never shown: {e}"
    );
}

#[test]
fn defaults_match_protocol() {
    let c = Config::default();
    assert!(c.validate().is_ok());
    assert_eq!(c.namespaces["results"].mode, Mode::State);
    assert_eq!(c.namespaces["results"].retained, 10);
    assert_eq!(c.namespaces["clips"].mode, Mode::Feed);
    assert_eq!(c.namespaces["clips"].retained, 10_000);
    assert_eq!(c.limits.max_frame_bytes, 4096);
    assert_eq!(c.deepest_retention(), CLIPS_RETAINED);
}

#[test]
fn file_adds_namespaces_and_keeps_defaults() {
    let c = Config::from_toml(
        r#"
        heartbeat_ms = 1000
        [limits]
        max_subscriptions = 3
        [namespaces.cheers]
        mode = "feed"
        retained = 5
        publish = true
        "#,
    )
    .unwrap();
    assert_eq!(c.heartbeat_ms, 1000);
    assert_eq!(c.limits.max_subscriptions, 3);
    assert_eq!(c.limits.frames_burst, 40);
    assert!(c.namespaces["cheers"].publish);
    assert!(c.namespaces.contains_key("results"));
    let again = Config::from_toml(&c.to_toml()).unwrap();
    assert_eq!(again.namespaces, c.namespaces);
}

#[test]
fn trusted_proxies_take_addresses_and_ranges_in_canonical_form() {
    let c = Config::from_toml(
        "trusted_proxies = [\"10.0.0.7\", \"10.1.2.3/16\", \"fd00::/8\", \"::ffff:192.0.2.0/120\"]\n",
    )
    .unwrap();
    let shown: Vec<String> = c.trusted_proxies.iter().map(|n| n.0.to_string()).collect();
    assert_eq!(
        shown,
        ["10.0.0.7/32", "10.1.0.0/16", "fd00::/8", "192.0.2.0/24"]
    );
    let again = Config::from_toml(&c.to_toml()).unwrap();
    assert_eq!(again.trusted_proxies, c.trusted_proxies);
    let err = Config::from_toml("trusted_proxies = [\"proxy.local\"]\n").unwrap_err();
    assert!(err.to_string().contains("proxy.local"), "{err}");
}

#[test]
fn secrets_are_redacted_in_the_printed_configuration() {
    let mut c = Config::from_toml(
        r#"
        publish_key = "publish-key-of-at-least-32-bytes-xyz"
        admin_key = "admin-key-of-at-least-32-bytes-xyzw"
        operator_key = "operator-key-of-at-least-32-bytes-xyz"
        [auth]
        secret = "auth-secret-of-at-least-32-bytes-xyz"
        [bus]
        url = "nats://editor:bus-url-pass@nats-1:4222,nats://nats-2:4222"
        password = "bus-password"
        token = "bus-token"
        [stats]
        key = "stats-key-of-at-least-32-bytes-xyzw"
        "#,
    )
    .unwrap();
    c.node_name = "n".into();
    c.validate().unwrap();
    let text = c.to_toml();
    for secret in [
        "publish-key-of",
        "admin-key-of",
        "operator-key-of",
        "auth-secret-of",
        "bus-url-pass",
        "bus-password",
        "bus-token",
        "stats-key-of",
    ] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(
        text.contains("nats://editor:<redacted>@nats-1:4222,nats://nats-2:4222"),
        "{text}"
    );
    assert_eq!(text.matches(REDACTED).count(), 8, "{text}");
}

#[test]
fn short_publish_keys_and_half_tls_are_refused() {
    for (toml, needle) in [
        ("publish_key = \"a\"\n", "publish_key"),
        ("admin_key = \"short\"\n", "admin_key"),
        ("[tls]\ncert_file = \"/c.pem\"\n", "tls"),
        ("proxy_protocol = true\n", "proxy_protocol"),
        (
            "[limits]\naddress_share_percent = 0\n",
            "address_share_percent",
        ),
    ] {
        let c = Config::from_toml(toml).unwrap();
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains(needle), "{toml}: {err}");
    }
    // "" is how the old reference left the key unset.
    assert!(
        Config::from_toml("publish_key = \"\"\n")
            .unwrap()
            .publish_key
            .is_none()
    );
    assert!(
        Config::from_toml("admin_key = \"\"\n")
            .unwrap()
            .admin_key
            .is_none()
    );
}

#[test]
fn bad_files_are_refused_with_a_reason() {
    let err = Config::from_toml("nonsense = 1").unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Malformed);
    assert!(err.to_string().contains("nonsense"), "{err}");
    let c = Config::from_toml("[namespaces.x]\nmode = \"feed\"\nretained = 0\n").unwrap();
    let err = c.validate().unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Invalid);
    assert!(err.to_string().contains("retained"), "{err}");
    let cli = Cli::parse_from(["tribune-hub", "--config", "/nonexistent/tribune.toml"]);
    let err = Config::load(&cli).unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Unreadable);
    assert!(
        format!("{err:#}").starts_with("cannot read /nonexistent/tribune.toml: "),
        "{err:#}"
    );
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_layer_changes_only_what_it_names() {
    let file = "heartbeat_ms = 1000\n[namespaces.results]\nretained = 20\n";
    let c = super::layers::layered(
        &Config::default(),
        Some((Path::new("t.toml"), file)),
        env(&[
            ("TRIBUNE_BUS__PASSWORD", "s3cret"),
            ("TRIBUNE_DEMO", "1"),
            ("TRIBUNE_LIMITS__FRAMES_BURST", "80"),
            (
                "TRIBUNE_ALLOWED_ORIGINS",
                "https://a.example, https://b.example",
            ),
            ("TRIBUNE_HUB_BIN", "/not/a/setting"),
            ("TRIBUNE_NATS", "nats://x:4222"),
        ]),
    )
    .unwrap();
    assert_eq!(c.heartbeat_ms, 1000);
    let results = &c.namespaces["results"];
    assert_eq!(results.retained, 20);
    assert_eq!(
        results.mode,
        tribune_protocol::Mode::State,
        "kept from the built-in"
    );
    assert_eq!(results.reactions.len(), 4, "kept from the built-in");
    assert_eq!(c.bus.password.as_deref(), Some("s3cret"));
    assert!(c.demo);
    assert_eq!(c.limits.frames_burst, 80);
    assert_eq!(
        c.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
}

#[test]
fn errors_say_where() {
    let file = "demo = false\n\n[limits]\nframes_burst = \"lots\"\n";
    let e = super::layers::layered(
        &Config::default(),
        Some((Path::new("t.toml"), file)),
        env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("t.toml:4: limits.frames_burst: invalid type"),
        "{e}"
    );
    let e = super::layers::layered(
        &Config::default(),
        None,
        env(&[("TRIBUNE_HEARTBEAT_MS", "25s")]),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "TRIBUNE_HEARTBEAT_MS: expected an integer, got '25s'");
    let e = super::layers::layered(&Config::default(), None, env(&[("TRIBUNE_DEMO", "maybe")]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("TRIBUNE_DEMO: expected a boolean"), "{e}");
    let e = super::layers::layered(
        &Config::default(),
        None,
        env(&[("TRIBUNE_BUS__PASWORD", "x")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("TRIBUNE_BUS__PASWORD: unknown field `pasword`"),
        "{e}"
    );
    let e = super::layers::layered(
        &Config::default(),
        Some((Path::new("t.toml"), "[namespaces.new]\nretained = 3\n")),
        env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("missing field `mode`"), "{e}");
    let e = super::layers::layered(
        &Config::default(),
        Some((Path::new("t.toml"), "a = [\n")),
        env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("t.toml:"), "{e}");
}

#[test]
fn retention_by_time_sizes_the_stream_and_is_bounded() {
    let c = Config::default();
    let clips = &c.namespaces["clips"];
    assert_eq!(
        (
            clips.retained_secs,
            clips.expected_rate,
            clips.retained_bytes
        ),
        (300, 10, 32 * 1024 * 1024)
    );
    assert_eq!(clips.depth(), 10_000, "5 min at 10/s is within the count");
    assert_eq!(c.namespaces["results"].retained_secs, 0);
    // A window deeper than the count decides the stream's per-subject limit.
    let c = Config::from_toml(
        "[namespaces.clips]\nretained = 100\nretained_secs = 5\nexpected_rate = 150\n\
         [namespaces.live]\nmode = \"feed\"\nretained = 50\n",
    )
    .unwrap();
    assert!(c.validate().is_ok());
    assert_eq!(c.namespaces["clips"].depth(), 750);
    assert_eq!(c.namespaces["live"].depth(), 50, "no window: the count");
    assert_eq!(
        c.namespaces["live"].retained_bytes, DEFAULT_RETAINED_BYTES,
        "a new namespace gets the default cap"
    );
    assert_eq!(c.deepest_retention(), 750);
    for (toml, needle) in [
        ("retained_secs = 86401", "retained_secs"),
        (
            "retained_secs = 3600\nexpected_rate = 100",
            "at most 100000",
        ),
        ("retained_bytes = 1000", "retained_bytes"),
    ] {
        let c = Config::from_toml(&format!("[namespaces.clips]\n{toml}\n")).unwrap();
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains(needle), "{toml}: {err}");
    }
}

#[test]
fn a_region_names_its_origin_plainly() {
    let check = |toml: &str| Config::from_toml(toml).unwrap().validate();
    assert!(
        check(
            "[bus]\nstream = \"TRIBUNE_B\"\nmirror_of = \"TRIBUNE\"\nmirror_api = \"$JS.A.API\"\n"
        )
        .is_ok()
    );
    for bad in [
        "[bus]\nmirror_of = \"TRIBUNE\"\n",
        "[bus]\nstream = \"B\"\nmirror_of = \"TRI.BUNE\"\n",
        "[bus]\nmirror_api = \"$JS.A.API\"\n",
        "[bus]\nstream = \"B\"\nmirror_of = \"T\"\nmirror_api = \"$JS.*.API\"\n",
    ] {
        let e = check(bad).unwrap_err();
        assert!(e.to_string().contains("bus.mirror_"), "{bad}: {e}");
    }
}
