//! What the workspace's tests share, kept in one place so that every test follows the same
//! rules.
//!
//! - [`db`]: a fresh database per test (a SQLite file, or a new database on the PostgreSQL server
//!   named by `DATABASE_URL`), dropped afterwards whether the test passed or not. Under
//!   `CI=true` a test that needs PostgreSQL fails when it cannot have it; it never skips.
//! - [`proxy`]: a TCP proxy in front of PostgreSQL that a test cuts and restores.
//! - [`process`]: a service binary as a process: started with a clean environment, its port
//!   read from its log, its log kept for assertion messages, killed when dropped.
//! - [`jwt`]: signing keys, tokens and their JWK set, for `AUTH_MODE=jwt`.
//! - [`lambda`]: a stand-in for the Lambda Runtime API (and the secrets extension), and the events
//!   API Gateway, EventBridge and CloudFormation send.
//! - [`fuzz_corpus`]: the kept fuzzing corpus, replayed by the parsers' tests.
//!
//! Nothing here reaches beyond 127.0.0.1.

pub mod db;
pub mod jwt;
pub mod lambda;
pub mod process;
pub mod proxy;

use std::path::{Path, PathBuf};

/// The workspace's root folder (this crate sits right below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ is inside the workspace")
        .to_path_buf()
}

/// Whether the tests run under CI (`CI` set, as CI systems and `.ci/run` set it).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The fuzzing corpus of one parser (`fuzz/corpus/<parser>/`, see `fuzz/README.md`): each file's
/// path and bytes, in name order.
pub fn fuzz_corpus(parser: &str) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let dir = workspace_root().join("fuzz/corpus").join(parser);
    let mut paths = std::fs::read_dir(&dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    paths.sort();
    paths
        .into_iter()
        .map(|path| std::fs::read(&path).map(|bytes| (path, bytes)))
        .collect()
}
