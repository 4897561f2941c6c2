//! Where the binaries under test are.
//!
//! Cargo puts a workspace's binaries in `<target>/<profile>/` and runs test executables from
//! `<target>/<profile>/deps/`, so the binaries are found relative to the running test, whatever
//! the target directory is (the default in CI, `CARGO_TARGET_DIR` on a developer's machine).
//!
//! `cargo test --workspace` (CI) builds them before any test runs, because `billing-service`
//! and `stripe-setup` have integration tests, which need their package's binaries. `cargo test
//! -p e2e` alone does not: a library dependency never builds a package's binaries. So when a
//! binary is missing, or older than the sources it is built from, it is built here with
//! `cargo build`, once per test process; testing a stale binary would prove nothing about the
//! code under review.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

pub const BILLING_SERVICE: &str = "billing-service";
pub const STRIPE_SETUP: &str = "stripe-setup";

/// The path of one of the workspace's binaries, built first if needed. Panics with what to do
/// when it cannot be had.
pub fn binary(name: &str) -> PathBuf {
    static CHECKED: Mutex<bool> = Mutex::new(false);
    let dir = bin_dir();
    let path_of = |name: &str| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    // Poisoning only means another test panicked while holding the lock; the check is redone.
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if !*checked {
        let sources = newest_source();
        let stale = [BILLING_SERVICE, STRIPE_SETUP]
            .iter()
            .any(|bin| modified(&path_of(bin)).is_none_or(|built| built < sources));
        if stale {
            build(&dir);
        }
        *checked = true;
    }
    let path = path_of(name);
    assert!(
        path.is_file(),
        "the {name} binary is missing at {}; build it with `cargo build --workspace --bins` \
         (`cargo test --workspace` builds it too)",
        path.display()
    );
    path
}

/// `<target>/<profile>/`: the parent of the test executable's `deps/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe
        .parent()
        .expect("the test executable's folder")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The newest modification time among the files the two binaries are built from.
fn newest_source() -> SystemTime {
    let root = workspace_root();
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut pending = vec![root.join("migrations"), root.join("Cargo.lock")];
    for package in ["billing-service", "billing-stripe", "stripe-setup"] {
        for file in ["src", "Cargo.toml", "build.rs"] {
            pending.push(root.join(package).join(file));
        }
    }
    // Bounded: the source trees are small; a symlink loop cannot recur past this many entries.
    let mut budget = 10_000;
    while let Some(path) = pending.pop() {
        budget -= 1;
        if budget == 0 {
            break;
        }
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if let Some(time) = modified(&path) {
            newest = newest.max(time);
        }
    }
    newest
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `cargo build` of both binaries into the target directory this test runs from. Cargo releases
/// its build lock before it runs tests, so this does not wait on the `cargo test` that started
/// us.
fn build(dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = dir.parent().expect("the target directory");
    let profile = dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--bins", "-p", BILLING_SERVICE, "-p", STRIPE_SETUP])
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the binaries under test: {e}"));
    assert!(
        output.status.success(),
        "building the binaries under test failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
