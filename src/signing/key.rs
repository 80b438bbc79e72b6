//! The signing key: an ECDSA P-256 key in cosign's formats — its encrypted private key
//! (`ENCRYPTED SIGSTORE PRIVATE KEY`: scrypt + NaCl secretbox over PKCS#8), or plain PKCS#8 / SEC1 PEM —
//! and signatures as cosign makes them (ASN.1 DER over SHA-256).
//!
//! No crate reads cosign's encrypted container, so that part is written here on top of the `scrypt` and
//! `crypto_secretbox` crates.

use base64::Engine;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey as EcdsaKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::reason::Reason;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("the signing key is not PEM: {0}")]
    NotPem(String),
    #[error("the signing key is a {0} PEM block; expected a cosign private key or a PKCS#8 ECDSA P-256 key")]
    UnsupportedPem(String),
    #[error("the encrypted cosign key cannot be read: {0}")]
    Malformed(String),
    #[error("the password does not open the encrypted cosign key (wrong password, or a damaged key)")]
    WrongPassword,
    #[error("the encrypted cosign key needs a password (set manifestSigning.key.passwordKey)")]
    PasswordRequired,
    #[error(
        "the encrypted cosign key asks for scrypt N={n}, r={r}, p={p}; Weft derives keys with at most \
         N={MAX_SCRYPT_N}, r={MAX_SCRYPT_R}, p={MAX_SCRYPT_P} (cosign writes N=32768, r=8, p=1): re-encrypt it \
         with cosign"
    )]
    ScryptTooCostly { n: u64, r: u32, p: u32 },
    #[error("the key is not an ECDSA P-256 private key: {0}")]
    NotP256(String),
}

impl KeyError {
    pub fn reason(&self) -> Reason {
        match self {
            KeyError::WrongPassword => Reason::SigningKeyWrongPassword,
            KeyError::PasswordRequired => Reason::SigningKeyPasswordMissing,
            _ => Reason::SigningKeyInvalid,
        }
    }
}

/// A loaded signing key; a keyless one carries the certificate Fulcio issued for it.
#[derive(Clone)]
pub struct SigningKey {
    key: EcdsaKey,
    /// PEM, the leaf first.
    chain: Option<std::sync::Arc<Vec<String>>>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("public", &self.public_pem()).finish()
    }
}

#[derive(Deserialize)]
struct Encrypted {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct ScryptParams {
    N: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

impl SigningKey {
    /// Reads a PEM private key; `password` opens cosign's encrypted format (cosign's own keys made with an
    /// empty password need `Some("")`).
    pub fn from_pem(pem: &str, password: Option<&str>) -> Result<SigningKey, KeyError> {
        let pem = pem.trim();
        let (label, der) = pem_rfc7468::decode_vec(pem.as_bytes()).map_err(|e| KeyError::NotPem(e.to_string()))?;
        let key = match label {
            "ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY" => {
                let password = password.ok_or(KeyError::PasswordRequired)?;
                let plain = decrypt(&der, password)?;
                EcdsaKey::from_pkcs8_der(&plain).map_err(|e| KeyError::NotP256(e.to_string()))?
            }
            "PRIVATE KEY" => EcdsaKey::from_pkcs8_der(&der).map_err(|e| KeyError::NotP256(e.to_string()))?,
            "EC PRIVATE KEY" => {
                let secret = p256::SecretKey::from_sec1_der(&der).map_err(|e| KeyError::NotP256(e.to_string()))?;
                EcdsaKey::from(secret)
            }
            other => return Err(KeyError::UnsupportedPem(other.to_string())),
        };
        Ok(SigningKey { key, chain: None })
    }

    /// A new key, made for one use (keyless signing: Fulcio certifies it for minutes).
    pub fn generate() -> Result<SigningKey, KeyError> {
        // rcgen draws it from the system's secure random source.
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| KeyError::NotP256(format!("no key could be made: {e}")))?;
        let key = EcdsaKey::from_pkcs8_der(&pair.serialize_der()).map_err(|e| KeyError::NotP256(e.to_string()))?;
        Ok(SigningKey { key, chain: None })
    }

    /// The key with the certificate chain (PEM, leaf first) that certifies it.
    pub fn with_chain(mut self, chain: Vec<String>) -> SigningKey {
        self.chain = Some(std::sync::Arc::new(chain));
        self
    }

    /// The certificate chain of a keyless key.
    pub fn chain(&self) -> Option<&[String]> {
        self.chain.as_deref().map(Vec::as_slice)
    }

    /// What a verifier is given: the leaf certificate of a keyless key, else the public key (PEM).
    pub fn verifier_pem(&self) -> String {
        match self.chain().and_then(<[String]>::first) {
            Some(leaf) => leaf.clone(),
            None => self.public_pem(),
        }
    }

    /// A DER ECDSA signature over SHA-256(`data`), as cosign makes them.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        let sig: DerSignature = self.key.sign(data);
        sig.as_bytes().to_vec()
    }

    pub fn sign_base64(&self, data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.sign(data))
    }

    /// The public key, PEM (what `cosign verify --key` takes).
    pub fn public_pem(&self) -> String {
        self.key.verifying_key().to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// The public key's DER SPKI.
    pub fn public_der(&self) -> Vec<u8> {
        self.key.verifying_key().to_public_key_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// An identifier for the key: hex SHA-256 of its DER SPKI.
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(self.public_der()))
    }
}

fn decrypt(container: &[u8], password: &str) -> Result<Vec<u8>, KeyError> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let e: Encrypted = serde_json::from_slice(container).map_err(|e| KeyError::Malformed(e.to_string()))?;
    if e.kdf.name != "scrypt" || e.cipher.name != "nacl/secretbox" {
        return Err(KeyError::Malformed(format!("unsupported kdf {:?} or cipher {:?}", e.kdf.name, e.cipher.name)));
    }
    let b64 =
        |s: &str| base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| KeyError::Malformed(e.to_string()));
    let (salt, nonce, ciphertext) = (b64(&e.kdf.salt)?, b64(&e.cipher.nonce)?, b64(&e.ciphertext)?);
    let params = scrypt_params(&e.kdf.params)?;
    let mut key = [0u8; 32];
    // Deriving takes a tenth of a second or more: not on an async runtime's thread (see `cpu_heavy`).
    cpu_heavy(|| scrypt::scrypt(password.as_bytes(), &salt, &params, &mut key))
        .map_err(|e| KeyError::Malformed(e.to_string()))?;
    if nonce.len() != 24 {
        return Err(KeyError::Malformed(format!("nonce is {} bytes, not 24", nonce.len())));
    }
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    cipher.decrypt(nonce.as_slice().into(), ciphertext.as_slice()).map_err(|_| KeyError::WrongPassword)
}

/// Runs CPU-heavy work that may be called from async code without stalling the runtime: on a
/// multi-threaded tokio runtime the worker first hands its other tasks to the rest (`block_in_place`);
/// elsewhere (no runtime, a blocking-pool thread, or a single-threaded runtime, where handing over is not
/// possible) it simply runs.
pub fn cpu_heavy<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The largest scrypt parameters Weft derives a key with. cosign writes N=32768, r=8, p=1 (32 MiB and
/// about a tenth of a second); these allow twice its N and twice its p: at most 64 MiB (128·N·r bytes)
/// and four times its work. A key asking for more is refused before any work is done, so a Secret
/// cannot make Weft spend gigabytes of memory or minutes of CPU.
pub const MAX_SCRYPT_N: u64 = 1 << 16;
pub const MAX_SCRYPT_R: u32 = 8;
pub const MAX_SCRYPT_P: u32 = 2;

fn scrypt_params(p: &ScryptParams) -> Result<scrypt::Params, KeyError> {
    let (n, r, p) = (p.N, p.r, p.p);
    if !n.is_power_of_two() || n < 2 {
        return Err(KeyError::Malformed(format!("scrypt N={n} is not a power of two")));
    }
    if n > MAX_SCRYPT_N || r > MAX_SCRYPT_R || p > MAX_SCRYPT_P {
        return Err(KeyError::ScryptTooCostly { n, r, p });
    }
    scrypt::Params::new(n.trailing_zeros() as u8, r, p)
        .map_err(|e| KeyError::Malformed(format!("scrypt parameters: {e}")))
}

/// Whether a PEM public key is one `verify` can use (ECDSA P-256).
pub fn verify_key_parses(public_pem: &str) -> bool {
    use p256::pkcs8::DecodePublicKey;
    p256::ecdsa::VerifyingKey::from_public_key_pem(public_pem.trim()).is_ok()
}

/// Verifies a DER signature made by `sign` against a PEM public key.
pub fn verify(public_pem: &str, data: &[u8], der_signature: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::DecodePublicKey;
    let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(public_pem.trim()) else { return false };
    let Ok(sig) = p256::ecdsa::Signature::from_der(der_signature) else { return false };
    key.verify(data, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+yaTHcmYlgvj6dhO
5S1doLeJtaNjCCoGdHMFO650whihRANCAATtC3IXpOSbqt/kC7PyXatHyX6gWSlt
y5g1MplhMrul3xK3zVfbb05Yo6qveZLDJUq9kfM3JGihNAYXM+fbQi26
-----END PRIVATE KEY-----";

    #[test]
    fn signs_and_verifies_with_a_pkcs8_key() {
        let key = SigningKey::from_pem(PKCS8, None).unwrap();
        let sig = key.sign(b"payload");
        assert!(verify(&key.public_pem(), b"payload", &sig));
        assert!(!verify(&key.public_pem(), b"other", &sig));
        assert_eq!(key.key_id().len(), 64);
    }

    #[test]
    fn rejects_what_is_not_a_usable_key() {
        assert!(matches!(SigningKey::from_pem("not pem", None), Err(KeyError::NotPem(_))));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
        assert!(matches!(SigningKey::from_pem(cert, None), Err(KeyError::UnsupportedPem(_))));
        let enc = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\ne30=\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----";
        assert_eq!(SigningKey::from_pem(enc, None).unwrap_err(), KeyError::PasswordRequired);
        assert!(matches!(SigningKey::from_pem(enc, Some("x")), Err(KeyError::Malformed(_))));
    }

    /// cosign's encrypted container around the PKCS#8 test key, with the given scrypt parameters.
    fn encrypted_pem(n: u64, r: u32, p: u32, password: &str) -> String {
        use crypto_secretbox::aead::{Aead, KeyInit};
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let (_, der) = pem_rfc7468::decode_vec(PKCS8.as_bytes()).unwrap();
        let (salt, nonce) = ([7u8; 32], [9u8; 24]);
        let mut ciphertext = Vec::new();
        // Beyond the bound the ciphertext does not matter: Weft must refuse before deriving anything.
        if n <= MAX_SCRYPT_N && r <= MAX_SCRYPT_R && p <= MAX_SCRYPT_P {
            let params = scrypt::Params::new(n.trailing_zeros() as u8, r, p).unwrap();
            let mut key = [0u8; 32];
            scrypt::scrypt(password.as_bytes(), &salt, &params, &mut key).unwrap();
            let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
            ciphertext = cipher.encrypt(nonce.as_slice().into(), der.as_slice()).unwrap();
        }
        let json = serde_json::json!({
            "kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": b64(&salt)},
            "cipher": {"name": "nacl/secretbox", "nonce": b64(&nonce)},
            "ciphertext": b64(&ciphertext),
        });
        pem_rfc7468::encode_string("ENCRYPTED SIGSTORE PRIVATE KEY", LineEnding::LF, json.to_string().as_bytes())
            .unwrap()
    }

    #[test]
    fn scrypt_parameters_beyond_the_bound_are_refused_before_any_work() {
        // Within the bound (small N keeps the test fast): the key opens.
        let key = SigningKey::from_pem(&encrypted_pem(1024, 8, 1, "pw"), Some("pw")).unwrap();
        assert_eq!(key.public_pem(), SigningKey::from_pem(PKCS8, None).unwrap().public_pem());
        // N = 2^40 would need 128 TiB; r and p past the bound multiply the work: all refused at once.
        for (n, r, p) in [(1 << 40, 8, 1), (MAX_SCRYPT_N * 2, 8, 1), (1024, 1 << 20, 1), (1024, 8, 1 << 20)] {
            let started = std::time::Instant::now();
            let err = SigningKey::from_pem(&encrypted_pem(n, r, p, "pw"), Some("pw")).unwrap_err();
            assert_eq!(err, KeyError::ScryptTooCostly { n, r, p });
            assert!(err.to_string().contains(&format!("N={n}, r={r}, p={p}")), "{err}");
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heavy_work_runs_on_every_kind_of_thread() {
        // On a worker of a multi-threaded runtime, in the blocking pool, and with no runtime at all.
        assert_eq!(cpu_heavy(|| 1), 1);
        assert_eq!(tokio::task::spawn_blocking(|| cpu_heavy(|| 2)).await.unwrap(), 2);
        assert_eq!(std::thread::spawn(|| cpu_heavy(|| 3)).join().unwrap(), 3);
        let key = SigningKey::from_pem(&encrypted_pem(1024, 8, 1, "pw"), Some("pw")).unwrap();
        assert!(verify_key_parses(&key.public_pem()));
    }

    #[tokio::test]
    async fn heavy_work_runs_on_a_single_threaded_runtime() {
        assert_eq!(cpu_heavy(|| 4), 4);
    }
}
