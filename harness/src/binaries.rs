//! Where the binaries the harness starts come from. Tests look in fixed
//! places (what `scripts/test` builds and installs) and fail with what to
//! do; the load generator, which runs anywhere, searches more widely.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace's root (this crate's parent folder).
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

/// The hub binary tests run: `$TRIBUNE_HUB_BIN`, else
/// `target/debug/tribune-hub`. Nested cargo builds would deadlock on
/// cargo's lock, so the harness only looks for it; panics when missing.
pub fn hub_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TRIBUNE_HUB_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let path = target.join("debug/tribune-hub");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p tribune-hub` first (scripts/test does)",
        path.display()
    );
    path
}

/// The nats-server binary tests run: `$NATS_SERVER_BIN`, else
/// `.tools/bin/nats-server` (where `scripts/install-nats` puts it), else
/// `nats-server` in `PATH`; the first that is 2.11 or newer (batched direct
/// get). Panics with what to do when there is none.
pub fn nats_server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let candidates = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .into_iter()
            .chain([workspace_root().join(".tools/bin/nats-server")])
            .chain(std::env::var_os("PATH").into_iter().flat_map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("nats-server"))
                    .collect::<Vec<_>>()
            }));
        let mut too_old = Vec::new();
        for bin in candidates.filter(|b| b.is_file()) {
            match nats_server_version(&bin) {
                Some((major, minor)) if (major, minor) >= (2, 11) => return bin,
                version => too_old.push(format!("{} ({version:?})", bin.display())),
            }
        }
        panic!(
            "no nats-server 2.11 or newer found (NATS_SERVER_BIN, .tools/bin, PATH; too old or unreadable: {too_old:?}): run scripts/install-nats"
        );
    })
}

/// Major and minor version of a nats-server binary.
fn nats_server_version(bin: &Path) -> Option<(u64, u64)> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // "nats-server: v2.15.1"
    let start = text.find(": v")? + 3;
    let version = &text[start..];
    let mut parts = version.split('.');
    let major = parts.next()?.trim().parse().ok()?;
    let minor = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

/// What `bin --version` prints on stdout, trimmed (empty if it fails).
pub fn version_line(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The load generator's search: the path given, else the binary next to
/// the running one (or one folder up, from a test's `deps/`), else
/// `.tools/bin/<name>`, `target/release/<name>` or `target/debug/<name>` in
/// the current folder or up to three above it, else `PATH`.
pub fn find_binary(name: &str, given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return p.exists().then(|| p.to_path_buf());
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join(name));
        if let Some(up) = dir.parent() {
            candidates.push(up.join(name));
        }
    }
    if let Ok(mut dir) = std::env::current_dir() {
        for _ in 0..4 {
            candidates.push(dir.join(".tools/bin").join(name));
            candidates.push(dir.join("target/release").join(name));
            candidates.push(dir.join("target/debug").join(name));
            if !dir.pop() {
                break;
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates.into_iter().find(|p| p.is_file())
}
