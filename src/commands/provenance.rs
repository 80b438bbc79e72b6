//! `weft provenance verify`: re-checks the evidence an ApplicationProvenance records, end to end, and says
//! line by line what holds. Key-signed evidence in a Rekor v1 log: the log entry (its signed timestamp,
//! inclusion proof and checkpoint), the attestation's DSSE signature and that the log holds exactly it, the
//! image's own signature. Keyless evidence, or evidence in a Rekor v2 log: the Sigstore bundles attached to
//! the image, through sigstore-verify and a trusted root. Either way: the statement's subject against the
//! manifest image in the registry, and every git commit the statement names.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_VERIFIED, InputError, load_profile, read};
use crate::oci::{self, Registry};
use crate::provenance::rekor::{self, LogKey, Rekor};
use crate::referenced::ReferencedObjects;
use crate::resources::profile::IntegrityProfile;
use crate::resources::provenance::ApplicationProvenance;
use crate::signing::key::SigningKey;
use crate::source::CommitId;
use crate::source::verify::SourceVerifier;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Re-check the recorded evidence of NAMESPACE/APP (from the cluster), or of `--from-file`.
    Verify(VerifyArgs),
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// NAMESPACE/APP: the ApplicationProvenance to read from the cluster.
    pub target: Option<String>,
    /// An ApplicationProvenance as YAML (e.g. `kubectl get appprov APP -o yaml`), instead of the cluster.
    #[arg(long, requires = "profile")]
    pub from_file: Option<PathBuf>,
    /// The IntegrityProfile that governed it (default: the one its status names, from the cluster).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    #[command(flatten)]
    pub objects: super::Referenced,
    #[arg(long, env = "WEFT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A Sigstore trusted_root.json naming the log and, for keyless evidence, the Fulcio that certified the
    /// controller (default for key-signed evidence: the profile's log alone).
    #[arg(long)]
    pub trusted_root: Option<PathBuf>,
}

pub fn run(args: Args) -> u8 {
    let Command::Verify(v) = args.command;
    match verify(&v) {
        Ok(true) => EXIT_VERIFIED,
        Ok(false) => EXIT_FAILED,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_BAD_INPUT
        }
    }
}

/// Prints one check; returns whether it holds.
fn line(ok: bool, what: &str) -> bool {
    say!("{} {what}", if ok { "ok  " } else { "FAIL" });
    ok
}

fn verify(args: &VerifyArgs) -> Result<bool, InputError> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| InputError::Other(e.to_string()))?;
    let (record, profile, referenced) = match (&args.from_file, &args.target) {
        (Some(file), _) => {
            let record: ApplicationProvenance = serde_saphyr::from_str(&read(file)?)
                .map_err(|e| InputError::Other(format!("{}: not an ApplicationProvenance: {e}", file.display())))?;
            let profile = load_profile(args.profile.as_deref().unwrap_or(file))?;
            let referenced = args.objects.referenced(&profile, None)?;
            (record, profile, referenced)
        }
        (None, Some(target)) => {
            let (ns, name) =
                target.split_once('/').ok_or_else(|| InputError::Other(format!("{target:?} is not NAMESPACE/APP")))?;
            runtime.block_on(from_cluster(ns, name, args))?
        }
        (None, None) => return Err(InputError::Other("name NAMESPACE/APP, or give --from-file".into())),
    };
    Ok(runtime.block_on(check(&record, &profile, &referenced, args)))
}

async fn from_cluster(
    ns: &str,
    name: &str,
    args: &VerifyArgs,
) -> Result<(ApplicationProvenance, IntegrityProfile, ReferencedObjects), InputError> {
    let client = kube::Client::try_default().await.map_err(|e| InputError::Cluster(e.to_string()))?;
    let records: kube::Api<ApplicationProvenance> = kube::Api::namespaced(client.clone(), ns);
    let record =
        records.get(name).await.map_err(|e| InputError::Cluster(format!("ApplicationProvenance {ns}/{name}: {e}")))?;
    let profile = match &args.profile {
        Some(path) => load_profile(path)?,
        None => {
            let profile_name = record
                .status
                .as_ref()
                .and_then(|s| s.profile.as_ref())
                .map(|p| p.name.clone())
                .ok_or_else(|| InputError::Other(format!("{ns}/{name} names no profile in its status")))?;
            let profiles: kube::Api<IntegrityProfile> = kube::Api::namespaced(client.clone(), ns);
            profiles
                .get(&profile_name)
                .await
                .map_err(|e| InputError::Cluster(format!("IntegrityProfile {ns}/{profile_name}: {e}")))?
        }
    };
    let referenced = match &args.objects.resources {
        Some(path) => ReferencedObjects::from_yaml(&read(path)?)?,
        None => {
            crate::kubernetes::referenced::referenced(&client, ns, &profile.spec, &args.objects.argocd_namespace, None)
                .await?
        }
    };
    Ok((record, profile, referenced))
}

async fn check(
    record: &ApplicationProvenance,
    profile: &IntegrityProfile,
    referenced: &ReferencedObjects,
    args: &VerifyArgs,
) -> bool {
    let name = format!(
        "{}/{}",
        record.metadata.namespace.as_deref().unwrap_or_default(),
        record.metadata.name.as_deref().unwrap_or_default()
    );
    let Some(status) = &record.status else { return line(false, &format!("{name} has no status")) };
    let revisions: Vec<String> = status.sources.iter().map(|s| format!("{}@{}", s.repo_url, s.revision)).collect();
    say!("ApplicationProvenance {name}: verdict {}, revision(s) {}", status.verdict.as_str(), revisions.join(", "));
    let (Some(image), Some(entry_ref)) = (&status.manifest_image, &status.rekor) else {
        return line(false, "no manifest image and provenance entry are recorded, so there is nothing to re-check");
    };
    let (Some(signing), Some(rekor_settings)) =
        (profile.spec.manifest_signing.as_ref(), profile.spec.provenance.as_ref().and_then(|p| p.rekor.as_ref()))
    else {
        return line(false, "the profile names no signing key or no transparency log");
    };
    let (repository, digest) = image.split_once('@').unwrap_or((image.as_str(), ""));
    let registry = match Registry::new(repository, None) {
        Ok(r) => r,
        Err(e) => return line(false, &format!("the manifest image {image}: {e}")),
    };
    // A key and a Rekor v1 log: the legacy layout and the log entries themselves. Otherwise (keyless, Rekor
    // v2) the Sigstore bundles, through sigstore-verify and a trusted root.
    let checked = if signing.key.is_some() && !rekor_settings.is_v2() {
        legacy(status, entry_ref, profile, (signing, rekor_settings), referenced, &registry, image).await
    } else {
        bundles(status, profile, (signing, rekor_settings), referenced, args, &registry, image).await
    };
    let (mut all, Some(statement)) = checked else {
        say!("the evidence does NOT hold");
        return false;
    };

    // The statement's subject is the manifest image, which the registry still serves.
    let subject = statement["subject"][0]["digest"]["sha256"].as_str().unwrap_or_default();
    all &=
        line(format!("sha256:{subject}") == digest, &format!("the statement's subject is the manifest image {digest}"));
    let served = registry.manifest(digest).await.ok().flatten();
    all &= line(served.as_ref().is_some_and(|m| oci::digest(m) == digest), &format!("the registry serves {digest}"));

    // Every git commit the statement names exists where it says.
    let verifier =
        SourceVerifier::new(args.cache_dir.clone().unwrap_or_else(crate::source::fetch::default_cache_dir), 64);
    let deps =
        statement["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().cloned().unwrap_or_default();
    for dep in &deps {
        let uri = dep["uri"].as_str().unwrap_or_default().trim_start_matches("git+").to_string();
        let commit = dep["digest"]["gitCommit"].as_str().and_then(CommitId::parse);
        let Some(commit) = commit else {
            all &= line(false, &format!("dependency {uri} names no git commit"));
            continue;
        };
        let access = crate::source::verify::access(referenced, &uri, None);
        let found = tokio::task::block_in_place(|| verifier.repos.open(&uri, &[&commit], Some(&access), false).is_ok());
        all &= line(found, &format!("git commit {} exists in {uri}", commit.short()));
    }
    let recorded: Vec<&str> = status.sources.iter().map(|s| s.revision.as_str()).collect();
    let attested: Vec<&str> =
        deps.iter().filter(|d| d["name"] == "source").filter_map(|d| d["digest"]["gitCommit"].as_str()).collect();
    all &= line(recorded == attested, "the attested source commits are the revision(s) the record shows");
    say!("{}", if all { "the evidence holds" } else { "the evidence does NOT hold" });
    all
}

/// The profile's manifest signing and its transparency log.
type Settings<'a> = (&'a crate::resources::profile::ManifestSigning, &'a crate::resources::profile::RekorSettings);

/// Key-signed evidence in a Rekor v1 log: the entry (signed timestamp, inclusion proof, checkpoint), the
/// attestation in cosign's legacy layout that the log holds exactly, its DSSE signature, the image's
/// signature, and the verification summary. Returns whether all held, and the provenance statement.
async fn legacy(
    status: &crate::resources::provenance::ApplicationProvenanceStatus,
    entry_ref: &crate::resources::provenance::RekorEntry,
    profile: &IntegrityProfile,
    (signing, rekor_settings): Settings<'_>,
    referenced: &ReferencedObjects,
    registry: &Registry,
    image: &str,
) -> (bool, Option<serde_json::Value>) {
    let mut all = true;
    let log_key = match referenced
        .texts(&rekor_settings.public_key)
        .map_err(|e| e.to_string())
        .and_then(|t| LogKey::from_pem(&t.join("\n")).map_err(|e| e.to_string()))
    {
        Ok(k) => k,
        Err(e) => return (line(false, &format!("the log's public key: {e}")), None),
    };
    let key = signing
        .key
        .as_ref()
        .and_then(|r| referenced.signing_key(r).ok())
        .and_then(|(pem, password)| SigningKey::from_pem(&pem, password.as_deref().map(str::trim_end)).ok());
    let Some(key) = key else { return (line(false, "the profile's signing key cannot be read"), None) };
    let public = key.public_pem();

    // 1. The log entry.
    let rekor = Rekor::new(&rekor_settings.url);
    let entry = match rekor.get(&entry_ref.uuid).await {
        Ok(e) => e,
        Err(e) => return (line(false, &format!("Rekor entry {}: {e}", entry_ref.uuid)), None),
    };
    let verified = rekor::verify_entry(&entry, &log_key, true);
    all &= line(
        verified.is_ok()
            && entry.log_index == entry_ref.log_index
            && entry.integrated_time == entry_ref.integrated_time,
        &match &verified {
            Ok(()) => format!(
                "Rekor entry {} is in the log at index {} (signed entry timestamp, inclusion proof and checkpoint verify with the log key {})",
                entry.uuid, entry.log_index, log_key.log_id
            ),
            Err(e) => format!("Rekor entry {}: {e}", entry.uuid),
        },
    );
    if entry.log_index != entry_ref.log_index {
        all &= line(
            false,
            &format!("the record says log index {}, the log says {}", entry_ref.log_index, entry.log_index),
        );
    }

    // 2. The attestation attached to the image, and that the log holds exactly it.
    let digest = image.split_once('@').map(|(_, d)| d).unwrap_or_default();
    let att_layers = match registry.manifest(&oci::attestation_tag(digest)).await {
        Ok(Some(m)) => registry.layers(&m).await.unwrap_or_default(),
        Ok(None) => Vec::new(),
        Err(e) => return (line(false, &format!("the attestations of {image}: {e}")), None),
    };
    let Some((envelope, logged_hash)) = attached_envelope(&entry, &att_layers) else {
        return (line(false, &format!("no attestation attached to {image} is the envelope the log entry holds")), None);
    };
    all &= line(
        true,
        &format!("the attestation attached to {image} is the envelope logged (sha256 {})", &logged_hash[..16]),
    );
    let statement = match crate::provenance::open(&envelope, &public) {
        Ok(s) => {
            all &= line(true, &format!("its DSSE signature verifies with the signing key {}", &key.key_id()[..16]));
            s
        }
        Err(e) => return (line(false, &format!("the attestation: {e}")), None),
    };

    // 3. The manifest image is signed by the key.
    let repository = image.split_once('@').map(|(r, _)| r).unwrap_or(image);
    let payload = oci::simple_signing_payload(repository, digest, &Default::default());
    let sig_layers = match registry.manifest(&oci::signature_tag(digest)).await {
        Ok(Some(m)) => registry.layers(&m).await.unwrap_or_default(),
        _ => Vec::new(),
    };
    let signed = sig_layers.iter().any(|l| l.bytes == payload && oci::signature_verifies(l, &public));
    all &= line(signed, "the manifest image carries a signature by the signing key");

    // 4. The verification summary, where the revision was vouched for.
    if let Some(summary_ref) = &status.verification_summary {
        all &= check_summary(summary_ref, &att_layers, &log_key, &rekor, &public, digest, profile).await;
    }
    (all, Some(statement))
}

/// Evidence in Sigstore bundles (keyless, or a Rekor v2 log): the image's signature, its provenance and
/// its verification summary, each checked by sigstore-verify against a trusted root (the log's entry and
/// inclusion, the signer: the profile's key, or a certificate for its keyless identity from a certificate
/// authority of the root, valid when it signed). Returns whether all held, and the provenance statement.
async fn bundles(
    status: &crate::resources::provenance::ApplicationProvenanceStatus,
    profile: &IntegrityProfile,
    (signing, rekor_settings): Settings<'_>,
    referenced: &ReferencedObjects,
    args: &VerifyArgs,
    registry: &Registry,
    image: &str,
) -> (bool, Option<serde_json::Value>) {
    use crate::images::policy::{ImagePolicies, OneSigner};
    use crate::images::verify::{SLSA_V1, check};
    let public;
    let signer = match (&signing.key, &signing.keyless) {
        (Some(key_ref), _) => {
            let key = referenced
                .signing_key(key_ref)
                .ok()
                .and_then(|(pem, password)| SigningKey::from_pem(&pem, password.as_deref().map(str::trim_end)).ok());
            let Some(key) = key else { return (line(false, "the profile's signing key cannot be read"), None) };
            public = key.public_pem();
            OneSigner::Key(&public)
        }
        (None, Some(keyless)) => {
            let Some(identity) = &keyless.identity else {
                return (
                    line(false, "the profile signs keylessly but names no manifestSigning.keyless.identity to expect"),
                    None,
                );
            };
            OneSigner::Keyless(crate::resources::profile::KeylessIdentity {
                issuer: Some(identity.issuer.clone()),
                subject: Some(identity.subject.clone()),
                ..Default::default()
            })
        }
        (None, None) => return (line(false, "the profile names no signing key and no keyless identity"), None),
    };
    let root = match (&args.trusted_root, &signing.keyless) {
        (Some(path), _) => match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return (line(false, &format!("--trusted-root {}: {e}", path.display())), None),
        },
        (None, Some(_)) => {
            return (
                line(
                    false,
                    "keyless evidence needs --trusted-root: a trusted_root.json naming the Fulcio that certified the controller and the log",
                ),
                None,
            );
        }
        (None, None) => {
            let key = referenced
                .texts(&rekor_settings.public_key)
                .map_err(|e| e.to_string())
                .and_then(|t| LogKey::from_pem(&t.join("\n")).map_err(|e| e.to_string()));
            match key {
                Ok(k) => crate::bundle::trusted_root_for_log(&rekor_settings.url, &k.der()).to_string(),
                Err(e) => return (line(false, &format!("the log's public key: {e}")), None),
            }
        }
    };
    let policies = match ImagePolicies::one_signer(signer, &root) {
        Ok(p) => p,
        Err(e) => return (line(false, &format!("the trusted root or the signer: {e}")), None),
    };
    let Some(expected) = policies.policies.first().and_then(|p| p.signers.first()).cloned() else {
        return (line(false, "no signer to expect"), None);
    };
    let digest_text = image.split_once('@').map(|(_, d)| d).unwrap_or_default();
    let Some(digest) = crate::images::reference::Digest::parse(digest_text) else {
        return (line(false, &format!("{image} names no digest")), None);
    };
    let evidence = match crate::images::evidence::fetch(registry, &digest).await {
        Ok(e) => e,
        Err(e) => return (line(false, &format!("the signatures and attestations of {image}: {e}")), None),
    };
    let who = expected.describe();
    let mut all = line(
        evidence.signatures.iter().any(|c| check(&policies, &expected, &digest, c).is_ok()),
        &format!(
            "the manifest image carries a signature that verifies (sigstore-verify: by {who}, logged in a log of the trusted root)"
        ),
    );
    let verified: Vec<serde_json::Value> = evidence
        .attestations
        .iter()
        .filter(|c| check(&policies, &expected, &digest, c).is_ok())
        .filter_map(|c| c.statement())
        .collect();
    let provenance = verified.iter().find(|s| s["predicateType"] == SLSA_V1).cloned();
    all &= line(
        provenance.is_some(),
        &format!("a SLSA provenance bundle for the image verifies (sigstore-verify: signed by {who}, logged)"),
    );
    if status.verification_summary.is_some() {
        let spec = crate::provenance::policy_sha256(&profile.spec);
        let vsa = verified.iter().find(|s| s["predicateType"] == crate::provenance::SLSA_VSA_V1);
        all &= line(
            vsa.is_some_and(|s| {
                s["subject"][0]["digest"]["sha256"].as_str().map(|d| format!("sha256:{d}")).as_deref()
                    == Some(digest_text)
                    && s["predicate"]["verificationResult"] == "PASSED"
                    && s["predicate"]["policy"]["digest"]["sha256"].as_str() == Some(spec.as_str())
            }),
            &format!(
                "a verification summary (SLSA VSA) for this image verifies and says PASSED under the profile's spec (sha256 {}; by {who}, logged)",
                &spec[..16]
            ),
        );
    }
    (all, provenance)
}

/// The attached envelope a `dsse` entry holds (by its hash), and that hash.
fn attached_envelope(entry: &rekor::Entry, att_layers: &[oci::Blob]) -> Option<(String, String)> {
    let body = entry.body_json().ok()?;
    let logged = body["spec"]["envelopeHash"]["value"].as_str()?.to_string();
    att_layers
        .iter()
        .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
        .find(|e| hex::encode(Sha256::digest(e.as_bytes())) == logged)
        .map(|e| (e, logged))
}

/// The summary's log entry verifies, holds an envelope attached to the image, signed by the key, about
/// this image and this profile's spec, with the result PASSED.
async fn check_summary(
    summary_ref: &crate::resources::provenance::RekorEntry,
    att_layers: &[oci::Blob],
    log_key: &LogKey,
    rekor: &Rekor,
    public: &str,
    digest: &str,
    profile: &IntegrityProfile,
) -> bool {
    let entry = match rekor.get(&summary_ref.uuid).await {
        Ok(e) => e,
        Err(e) => return line(false, &format!("verification summary entry {}: {e}", summary_ref.uuid)),
    };
    if let Err(e) = rekor::verify_entry(&entry, log_key, true) {
        return line(false, &format!("verification summary entry {}: {e}", entry.uuid));
    }
    let Some((envelope, _)) = attached_envelope(&entry, att_layers) else {
        return line(false, "no attestation attached to the image is the verification summary the log holds");
    };
    let statement = match crate::provenance::open(&envelope, public) {
        Ok(s) => s,
        Err(e) => return line(false, &format!("the verification summary: {e}")),
    };
    let spec = crate::provenance::policy_sha256(&profile.spec);
    let p = &statement["predicate"];
    line(
        statement["predicateType"] == crate::provenance::SLSA_VSA_V1
            && format!("sha256:{}", statement["subject"][0]["digest"]["sha256"].as_str().unwrap_or_default()) == digest
            && p["verificationResult"] == "PASSED"
            && p["policy"]["digest"]["sha256"].as_str() == Some(spec.as_str()),
        &format!(
            "the verification summary (SLSA VSA, log index {}) says PASSED for this image under the profile's spec (sha256 {})",
            entry.log_index,
            &spec[..16]
        ),
    )
}
