//! `weft verify-source --output json` as the tests run it: a profile of git policies, the Secrets and
//! ConfigMaps it refers to as a file, and the verdict, reason and exit code.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::git::{Gpg, GpgKey};

pub struct Run {
    pub code: i32,
    pub verdict: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn message(&self) -> &str {
        self.verdict["message"].as_str().unwrap_or_default()
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A profile with `policies` (one policy, or a list of them).
pub fn profile(policies: Value) -> Value {
    let policies = if policies.is_array() { policies } else { json!([policies]) };
    json!({
        "apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile",
        "metadata": {"name": "p", "namespace": "argocd"},
        "spec": {"applicationSelector": [{"name": "*"}], "sourceIntegrity": {"git": {"policies": policies}}}
    })
}

pub fn write_json(dir: &Path, name: &str, docs: &[Value]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, docs.iter().map(Value::to_string).collect::<Vec<_>>().join("\n---\n")).unwrap();
    path
}

/// `weft verify-source --output json` on `repo` at `revision`, with the profile and resources written to
/// `dir`; not run yet.
pub fn verify_command(dir: &Path, policies: Value, resources: &[Value], repo: &str, revision: &str) -> Command {
    let profile_path = write_json(dir, "profile.yaml", &[profile(policies)]);
    let resources_path = write_json(dir, "resources.yaml", resources);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(["verify-source", "--output", "json", "--repo", repo, "--revision", revision])
        .arg("--profile")
        .arg(profile_path)
        .arg("--resources")
        .arg(resources_path)
        .arg("--cache-dir")
        .arg(dir.join("cache"));
    cmd
}

/// `weft verify-source --output json` with a profile holding `policies`.
pub fn verify(dir: &Path, policies: Value, resources: &[Value], repo: &str, revision: &str, extra: &[&str]) -> Run {
    let out = verify_command(dir, policies, resources, repo, revision).args(extra).output().expect("run weft");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    Run {
        code: out.status.code().unwrap_or(-1),
        verdict: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

pub fn keyring(gpg: &Gpg, keys: &[&GpgKey]) -> Value {
    let data: serde_json::Map<String, Value> =
        keys.iter().map(|k| (k.fingerprint.clone(), json!(gpg.export(k)))).collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keys"}, "data": data})
}

pub fn gpg_policy(url: &str, mode: &str, allowed: &[&GpgKey]) -> Value {
    let keys: Vec<&str> = allowed.iter().map(|k| k.fingerprint.as_str()).collect();
    json!({"repos": [{"url": url}], "gpg": {"mode": mode, "keys": keys, "keyring": {"configMapRef": {"name": "keys"}}}})
}

#[track_caller]
pub fn assert_verdict(run: &Run, code: i32, reason: &str) {
    assert_eq!(
        (run.code, run.verdict["reason"].as_str()),
        (code, Some(reason)),
        "verdict: {}\nstdout: {}\nstderr: {}",
        serde_json::to_string_pretty(&run.verdict).unwrap(),
        run.stdout,
        run.stderr
    );
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
