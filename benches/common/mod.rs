//! What the benchmarks that need the test environment share.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

/// A peer's address from the test environment; `bench` names the benchmark for the message.
pub fn env(var: &str, bench: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run this with `tests/env/testenv.sh run -- cargo bench --bench {bench}`")
    })
}

/// Runs a command that must succeed; its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}
