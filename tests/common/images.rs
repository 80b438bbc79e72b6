//! Images for tests: keys, a certificate authority and its leaf, a trust root naming them and the test
//! Rekor, images pushed with crane and signed and attested by the real cosign.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use weft::images::policy::ImagePolicies;
use weft::resources::profile::IntegrityProfile;

use super::project::{PASSWORD, merge, rand_suffix};
use super::{peer, run_cmd};

pub const BUILDER: &str = "https://ci.example/builders/hosted";
pub const SUBJECT: &str = "https://ci.example/shop/build@refs/heads/main";
pub const ISSUER: &str = "https://issuer.example";

/// Keys, a certificate authority and its leaf, a trust root naming them and the test Rekor, and the
/// ConfigMaps a profile points at.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub registry: String,
}

impl Lab {
    pub fn new() -> Lab {
        let lab = Lab { dir: tempfile::tempdir().unwrap(), registry: peer("WEFT_TEST_REGISTRY_REFERRERS") };
        for prefix in ["k", "other"] {
            lab.cosign(&["generate-key-pair", "--output-key-prefix", prefix]);
        }
        let script = format!(
            r#"set -e
openssl ecparam -name prime256v1 -genkey -noout -out ca.key
openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/O=Weft Test/CN=weft-test-ca" \
  -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
openssl ecparam -name prime256v1 -genkey -noout -out leaf.key
openssl req -new -key leaf.key -subj "/O=Weft Test" -out leaf.csr
printf '%s\n' 'basicConstraints=critical,CA:false' 'keyUsage=critical,digitalSignature' \
  'extendedKeyUsage=codeSigning' 'subjectAltName=critical,URI:{SUBJECT}' \
  '1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:{ISSUER}' > leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -sha256 -extfile leaf.ext -out leaf.pem
openssl pkcs8 -topk8 -nocrypt -in leaf.key -out leaf.p8
openssl pkey -pubin -in "$REKOR_PUB" -outform DER -out rekor.der
openssl x509 -in ca.pem -outform DER -out ca.der
"#
        );
        let (code, _, err) = run_cmd(
            Command::new("sh")
                .current_dir(lab.dir.path())
                .env("REKOR_PUB", peer("WEFT_TEST_REKOR_PUBLIC_KEY"))
                .args(["-c", &script]),
        );
        assert_eq!(code, 0, "openssl: {err}");
        lab.cosign(&["import-key-pair", "--key", "leaf.p8", "--output-key-prefix", "leafc"]);
        let read = |f: &str| std::fs::read(lab.dir.path().join(f)).unwrap();
        let rekor = read("rekor.der");
        let root = json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{"baseUrl": peer("WEFT_TEST_REKOR_URL"), "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": B64.encode(&rekor), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": "2020-01-01T00:00:00Z"}},
                "logId": {"keyId": B64.encode(Sha256::digest(&rekor))}}],
            "certificateAuthorities": [{"subject": {"organization": "Weft Test", "commonName": "weft-test-ca"}, "uri": "https://ca.example",
                "certChain": {"certificates": [{"rawBytes": B64.encode(read("ca.der"))}]}, "validFor": {"start": "2020-01-01T00:00:00Z"}}],
            "ctlogs": [], "timestampAuthorities": []
        });
        let text = |f: &str| String::from_utf8(read(f)).unwrap();
        let docs = [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sigstore"}, "data": {"trusted_root.json": root.to_string()}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keys"}, "data": {"cosign.pub": text("k.pub")}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other-keys"}, "data": {"cosign.pub": text("other.pub")}}),
        ];
        let docs: Vec<String> = docs.iter().map(Value::to_string).collect();
        std::fs::write(lab.path("resources.yaml"), docs.join("\n---\n")).unwrap();
        lab
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cosign(&self, args: &[&str]) {
        let (code, _, err) = run_cmd(
            Command::new("cosign")
                .current_dir(self.dir.path())
                .env("COSIGN_PASSWORD", PASSWORD)
                .env("SIGSTORE_REKOR_PUBLIC_KEY", peer("WEFT_TEST_REKOR_PUBLIC_KEY"))
                .args(args),
        );
        assert_eq!(code, 0, "cosign {args:?}: {err}");
    }

    /// Pushes a new image (a layer no other image has) to `registry/repo:tag`; returns its reference.
    pub fn image_at(&self, registry: &str, repo: &str, tag: &str) -> String {
        let n = rand_suffix();
        let content = self.path(&format!("layer-{n}"));
        std::fs::write(&content, format!("{repo} {tag} {n} {}\n", std::process::id())).unwrap();
        let tar = self.path(&format!("layer-{n}.tar"));
        let (code, _, err) =
            run_cmd(Command::new("tar").current_dir(self.dir.path()).arg("cf").arg(&tar).arg(format!("layer-{n}")));
        assert_eq!(code, 0, "tar: {err}");
        let reference = format!("{registry}/{repo}:{tag}");
        let (code, _, err) = run_cmd(Command::new("crane").arg("append").arg("-f").arg(&tar).args(["-t", &reference]));
        assert_eq!(code, 0, "crane append: {err}");
        reference
    }

    pub fn image(&self, repo: &str, tag: &str) -> String {
        self.image_at(&self.registry.clone(), repo, tag)
    }

    pub fn digest_of(reference: &str) -> String {
        let (code, out, err) = run_cmd(Command::new("crane").args(["digest", reference]));
        assert_eq!(code, 0, "crane digest: {err}");
        out.trim().to_string()
    }

    /// `repo@sha256:…`: cosign signs digests.
    pub fn pinned(reference: &str) -> String {
        let name = reference.rsplit_once(':').unwrap().0;
        format!("{name}@{}", Lab::digest_of(reference))
    }

    pub fn logged(&self, args: &[&str]) {
        let rekor = peer("WEFT_TEST_REKOR_URL");
        let mut all = args.to_vec();
        all.extend(["--rekor-url", &rekor, "--tlog-upload=true", "-y"]);
        self.cosign(&all);
    }

    pub fn sign(&self, key: &str, reference: &str) {
        self.logged(&["sign", "--key", &format!("{key}.key"), &Lab::pinned(reference)]);
    }

    pub fn sign_with_certificate(&self, reference: &str) {
        let pinned = Lab::pinned(reference);
        self.logged(&[
            "sign",
            "--key",
            "leafc.key",
            "--certificate",
            "leaf.pem",
            "--certificate-chain",
            "ca.pem",
            &pinned,
        ]);
    }

    pub fn attest(&self, key: &str, reference: &str, new_bundle: bool) {
        let predicate = self.path("provenance.json");
        let p = json!({"buildDefinition": {"buildType": "https://ci.example/build/v1", "externalParameters": {}},
            "runDetails": {"builder": {"id": BUILDER}}});
        std::fs::write(&predicate, p.to_string()).unwrap();
        let key = format!("{key}.key");
        let pinned = Lab::pinned(reference);
        let mut args = vec!["attest", "--key", &key, "--type", "slsaprovenance1", "--predicate", "provenance.json"];
        if new_bundle {
            args.push("--new-bundle-format");
        }
        args.push(&pinned);
        self.logged(&args);
    }

    pub fn image_verification(&self, signer: Value, extra: Value) -> Value {
        let mut policy = json!({"images": [format!("{}/**", self.registry)], "signers": [signer]});
        merge(&mut policy, extra);
        json!({"trustedRoot": {"configMapRef": {"name": "sigstore", "key": "trusted_root.json"}}, "policies": [policy]})
    }

    pub fn profile(&self, image_verification: Value) -> PathBuf {
        let path = self.path(&format!("profile-{}.yaml", rand_suffix()));
        let p = json!({"apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile", "metadata": {"name": "p", "namespace": "argocd"},
            "spec": {"applicationSelector": [{"name": "*"}], "imageVerification": image_verification}});
        std::fs::write(&path, p.to_string()).unwrap();
        path
    }

    /// `weft verify-images … --output json`: (exit code, the per-image results).
    pub fn verify(&self, profile: &PathBuf, images: &[&str]) -> (i32, Vec<Value>) {
        let (code, out, err) = run_cmd(
            Command::new(env!("CARGO_BIN_EXE_weft"))
                .args(["verify-images", "--output", "json", "--resources"])
                .arg(self.path("resources.yaml"))
                .arg("--profile")
                .arg(profile)
                .args(images),
        );
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON ({code}): {out}\n{err}"));
        (code, v["images"].as_array().unwrap().clone())
    }

    pub fn policies(&self, image_verification: Value) -> ImagePolicies {
        let profile: IntegrityProfile =
            serde_json::from_str(&std::fs::read_to_string(self.profile(image_verification)).unwrap()).unwrap();
        let referenced = weft::referenced::ReferencedObjects::from_yaml(
            &std::fs::read_to_string(self.path("resources.yaml")).unwrap(),
        )
        .unwrap();
        ImagePolicies::compile(profile.spec.image_verification.as_ref().unwrap(), &referenced).unwrap()
    }
}

/// A project whose one Deployment runs a new image of the lab, signed with key `k`; the project's
/// resources hold the lab's (keys, trusted root) too. Returns the project and the image.
pub fn signed_image_project(lab: &Lab, repo: &str) -> (super::project::Project, String) {
    let web = lab.image(repo, "1.0");
    lab.sign("k", &web);
    let project = super::project::with_namespace(|ns| {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cart", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "cart"}}, "template": {"metadata": {"labels": {"app": "cart"}},
                "spec": {"containers": [{"name": "web", "image": web}]}}}});
        vec![("deployment.yaml".into(), deployment.to_string())]
    });
    let resources = project.path("resources.yaml");
    let both = format!(
        "{}\n---\n{}",
        std::fs::read_to_string(&resources).unwrap(),
        std::fs::read_to_string(lab.path("resources.yaml")).unwrap()
    );
    std::fs::write(&resources, both).unwrap();
    (project, web)
}

pub fn key(configmap: &str) -> Value {
    json!({"key": {"configMapRef": {"name": configmap, "key": "cosign.pub"}}})
}

pub fn keyless(issuer: &str, subject: Value) -> Value {
    let mut identity = json!({"issuer": issuer});
    merge(&mut identity, subject);
    json!({"keyless": identity})
}
