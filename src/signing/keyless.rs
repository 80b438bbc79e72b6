//! Keyless signing: an OIDC identity token (the controller's projected ServiceAccount token, audience
//! `sigstore`) buys a short-lived certificate from Fulcio for a key made for the purpose. The
//! certificate names the identity (for a ServiceAccount,
//! `https://kubernetes.io/namespaces/<ns>/serviceaccounts/<name>`) and the token's issuer; nothing
//! long-lived is kept. Fulcio's API: `POST /api/v2/signingCert`, the key's proof of possession being its
//! signature over the token's `sub` claim.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use thiserror::Error;

use crate::reason::Reason;
use crate::signing::key::SigningKey;

/// Fulcio's answers are small: a certificate chain.
const MAX_RESPONSE_BYTES: u64 = 256 << 10;
const TIMEOUT: Duration = Duration::from_secs(30);
/// Fulcio's OID for the token's issuer (a UTF-8 string), and the deprecated raw form before it.
const ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
const ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";

#[derive(Debug, Error)]
pub enum KeylessError {
    #[error("the identity token cannot be used: {0}")]
    Token(String),
    #[error("Fulcio refused the identity token or key ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("Fulcio at {url} cannot be reached: {reason}")]
    Unavailable { url: String, reason: String },
    #[error("Fulcio's answer is not a usable certificate: {0}")]
    Malformed(String),
    #[error("no key could be made to certify: {0}")]
    Key(String),
}

impl KeylessError {
    pub fn reason(&self) -> Reason {
        match self {
            KeylessError::Token(_) => Reason::IdentityTokenInvalid,
            KeylessError::Refused { .. } => Reason::FulcioRefused,
            KeylessError::Unavailable { .. } => Reason::FulcioUnavailable,
            KeylessError::Malformed(_) => Reason::FulcioResponseMalformed,
            KeylessError::Key(_) => Reason::SigningKeyInvalid,
        }
    }
}

crate::status::step_error!(KeylessError);

/// A key with the certificate Fulcio issued for it.
#[derive(Clone, Debug)]
pub struct Certified {
    pub key: SigningKey,
    /// PEM, the leaf first.
    pub chain: Vec<String>,
    /// The certificate's subject: its URI (or email) SAN.
    pub identity: String,
    /// The OIDC issuer the certificate names.
    pub issuer: String,
}

/// The `sub` claim of a JWT (not verified here: Fulcio verifies the token against its issuer).
pub fn subject_of(token: &str) -> Result<String, KeylessError> {
    let payload = token.trim().split('.').nth(1).ok_or_else(|| KeylessError::Token("not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| KeylessError::Token(format!("its payload is not base64url: {e}")))?;
    let claims: Value =
        serde_json::from_slice(&bytes).map_err(|e| KeylessError::Token(format!("its payload is not JSON: {e}")))?;
    claims["sub"].as_str().map(str::to_string).ok_or_else(|| KeylessError::Token("it has no sub claim".into()))
}

/// Asks Fulcio at `url` for a certificate for a new key, proving the identity with `token`.
pub async fn certify(url: &str, token: &str) -> Result<Certified, KeylessError> {
    let sub = subject_of(token)?;
    let key = SigningKey::generate().map_err(|e| KeylessError::Key(e.to_string()))?;
    let request = json!({
        "credentials": {"oidcIdentityToken": token.trim()},
        "publicKeyRequest": {
            "publicKey": {"algorithm": "ECDSA", "content": key.public_pem()},
            "proofOfPossession": key.sign_base64(sub.as_bytes())
        }
    });
    let endpoint = format!("{}/api/v2/signingCert", url.trim_end_matches('/'));
    let unavailable = |reason: String| KeylessError::Unavailable { url: url.to_string(), reason };
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| unavailable(e.to_string()))?;
    let resp = client.post(&endpoint).json(&request).send().await.map_err(|e| unavailable(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = crate::oci::read_capped(resp, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| KeylessError::Malformed(format!("the response body: {e:?}")))?;
    if status == 429 || status >= 500 {
        return Err(unavailable(format!("HTTP {status}")));
    }
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body);
        return Err(KeylessError::Refused { status, body: text.chars().take(512).collect() });
    }
    let answer: Value = serde_json::from_slice(&body).map_err(|e| KeylessError::Malformed(e.to_string()))?;
    let chain: Vec<String> = ["signedCertificateEmbeddedSct", "signedCertificateDetachedSct"]
        .iter()
        .find_map(|k| answer[k]["chain"]["certificates"].as_array())
        .ok_or_else(|| KeylessError::Malformed("no certificate chain".into()))?
        .iter()
        .filter_map(|c| c.as_str().map(|s| s.trim().to_string() + "\n"))
        .collect();
    let leaf = chain.first().ok_or_else(|| KeylessError::Malformed("an empty certificate chain".into()))?;
    let (identity, issuer, public) = read_leaf(leaf)?;
    if public != key.public_der() {
        return Err(KeylessError::Malformed("the certificate is for another key".into()));
    }
    Ok(Certified { key, chain, identity, issuer })
}

/// The identity, the issuer and the DER public key a Fulcio certificate names.
pub fn read_leaf(pem: &str) -> Result<(String, String, Vec<u8>), KeylessError> {
    let bad = |what: String| KeylessError::Malformed(what);
    let (_, der) = pem_rfc7468::decode_vec(pem.as_bytes()).map_err(|e| bad(format!("not PEM: {e}")))?;
    identity_of(&der)
}

/// The identity, the issuer and the DER public key a Fulcio certificate (DER) names; not verified.
pub fn identity_of(der: &[u8]) -> Result<(String, String, Vec<u8>), KeylessError> {
    use x509_parser::prelude::*;
    let bad = |what: String| KeylessError::Malformed(what);
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(format!("not X.509: {e}")))?;
    let identity = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::URI(u) => Some(u.to_string()),
                GeneralName::RFC822Name(e) => Some(e.to_string()),
                _ => None,
            })
        })
        .ok_or_else(|| bad("the certificate names no identity (URI or email SAN)".into()))?;
    let issuer = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == ISSUER_V2)
        .and_then(|e| der_utf8(e.value))
        .or_else(|| {
            let v1 = cert.extensions().iter().find(|e| e.oid.to_id_string() == ISSUER_V1)?;
            std::str::from_utf8(v1.value).ok().map(str::to_string)
        })
        .ok_or_else(|| bad("the certificate names no OIDC issuer".into()))?;
    Ok((identity, issuer, cert.public_key().raw.to_vec()))
}

/// The text of a DER UTF8String (tag 12, short or long length).
fn der_utf8(v: &[u8]) -> Option<String> {
    let (&tag, rest) = v.split_first()?;
    if tag != 12 {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let text = if len < 0x80 {
        rest.get(..len as usize)?
    } else {
        let n = (len & 0x7f) as usize;
        let size = rest.get(..n)?.iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        rest.get(n..n + size)?
    };
    String::from_utf8(text.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let enc = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!("{}.{}.sig", enc(br#"{"alg":"RS256"}"#), enc(claims.to_string().as_bytes()))
    }

    #[test]
    fn the_subject_comes_from_the_token_and_a_broken_token_says_why() {
        assert_eq!(
            subject_of(&jwt(json!({"sub": "system:serviceaccount:ns:sa"}))).unwrap(),
            "system:serviceaccount:ns:sa"
        );
        for (token, why) in [("abc", "not a JWT"), ("a.!!.c", "base64url"), (&jwt(json!({"aud": "x"})), "no sub")] {
            let e = subject_of(token).unwrap_err();
            assert!(e.to_string().contains(why), "{token}: {e}");
            assert_eq!(e.reason(), Reason::IdentityTokenInvalid);
        }
    }

    #[test]
    fn der_strings_are_read_with_short_and_long_lengths() {
        assert_eq!(der_utf8(b"\x0c\x03abc").as_deref(), Some("abc"));
        let long = "x".repeat(200);
        let mut v = vec![12, 0x81, 200];
        v.extend(long.as_bytes());
        assert_eq!(der_utf8(&v).as_deref(), Some(long.as_str()));
        assert_eq!(der_utf8(b"\x13\x03abc"), None, "another string type");
        assert_eq!(der_utf8(b"\x0c\x05ab"), None, "truncated");
    }
}
