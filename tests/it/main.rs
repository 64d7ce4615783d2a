//! Integration tests: they drive the real `panther-triage` binary, and compare it with the Python
//! reference in `../shared/tools` (set `PANTHER_TRIAGE_SHARED` to put that folder elsewhere).
//! Nothing here reaches anything but local files.

mod catalogue;
mod chaos;
mod cli;
mod config;
mod daemon;
mod graphql;
mod live;
mod openapi;
mod peer;
mod props;
mod secrets;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_panther-triage"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn shared() -> PathBuf {
    std::env::var_os("PANTHER_TRIAGE_SHARED").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared"))
}

pub fn tool(name: &str) -> PathBuf {
    let p = shared().join("tools").join(name);
    assert!(p.exists(), "{} is missing: these tests need the project's shared folder beside the repo", p.display());
    p
}

/// Runs a command and returns its output, failing the test with what it printed if it could not start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn python(script: &Path, args: &[&str]) -> Output {
    let out = run(Command::new("python3").arg(script).args(args));
    assert!(out.status.success(), "{} {args:?} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    out
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
