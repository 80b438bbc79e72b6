//! The webhook's serving certificate: PEM files (a mounted Secret, from cert-manager for example), re-read
//! when they change; or, without files, self-managed: Weft issues a CA and a serving certificate, keeps
//! them in a Secret (so replicas share them), puts the CA into the ValidatingWebhookConfiguration's
//! `caBundle`, and issues new ones when a third of the validity is left (the previous CA stays in the
//! bundle, so replicas that have not reloaded yet keep working).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::json;
use thiserror::Error;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

const NOT_AFTER: &str = "weft.dev/not-after";
const HOSTS: &str = "weft.dev/hosts";
const MANAGER: &str = "weft-webhook";

#[derive(Debug, Error)]
pub enum CertError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("the serving certificate or key is not usable: {0}")]
    Invalid(String),
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("cannot keep the certificate in Secret {0}: {1}")]
    Secret(String, #[source] kube::Error),
}

#[derive(clap::Args, Debug, Clone)]
pub struct CertOptions {
    /// PEM certificate chain to serve (a mounted Secret, for example); re-read when it changes.
    #[arg(long, env = "WEFT_WEBHOOK_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Its PEM private key.
    #[arg(long, env = "WEFT_WEBHOOK_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Without files: the Secret the self-managed certificate is kept in.
    #[arg(long, env = "WEFT_WEBHOOK_CERT_SECRET", default_value = "weft-webhook-tls")]
    pub cert_secret: String,
    /// The namespace of that Secret (Weft's own).
    #[arg(long, env = "WEFT_NAMESPACE", default_value = "weft-system")]
    pub cert_namespace: String,
    /// The ValidatingWebhookConfiguration whose caBundle Weft keeps up to date.
    #[arg(long, env = "WEFT_WEBHOOK_CONFIGURATION", default_value = "weft")]
    pub webhook_configuration: String,
    /// The names the certificate is for: the Service's DNS names, or IP addresses (repeatable).
    #[arg(
        long = "cert-host",
        env = "WEFT_WEBHOOK_CERT_HOSTS",
        value_delimiter = ',',
        default_value = "weft-webhook.weft-system.svc"
    )]
    pub cert_hosts: Vec<String>,
    #[arg(long, env = "WEFT_WEBHOOK_CERT_VALIDITY_DAYS", default_value_t = 365)]
    pub cert_validity_days: u32,
    /// PEM CA certificates that issue the apiserver's client certificate for webhooks (its admission
    /// configuration's `kubeConfigFile`): `/validate` then answers only a client that presents one;
    /// health and metrics stay open (probes present none). Re-read with the serving certificate.
    #[arg(long, env = "WEFT_WEBHOOK_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
}

/// The TLS configuration to serve, from files or from the self-managed Secret (issued when due).
pub async fn load(client: &Client, opts: &CertOptions) -> Result<Arc<ServerConfig>, CertError> {
    let (cert, key) = match (&opts.tls_cert_file, &opts.tls_key_file) {
        (Some(c), Some(k)) => {
            let read = |p: &PathBuf| std::fs::read(p).map_err(|e| CertError::Read(p.display().to_string(), e));
            (read(c)?, read(k)?)
        }
        _ => {
            let (cert, key, ca) = ensure(client, opts).await?;
            patch_ca_bundle(client, &opts.webhook_configuration, &ca).await;
            (cert, key)
        }
    };
    let client_ca = match &opts.client_ca_file {
        Some(p) => Some(std::fs::read(p).map_err(|e| CertError::Read(p.display().to_string(), e))?),
        None => None,
    };
    server_config_with_clients(&cert, &key, client_ca.as_deref())
}

pub fn server_config(cert: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, CertError> {
    server_config_with_clients(cert, key, None)
}

/// With `client_ca`, a client certificate is verified against it when presented; whether one was is
/// for the server to ask (`/validate` requires it, probes have none).
pub fn server_config_with_clients(
    cert: &[u8],
    key: &[u8],
    client_ca: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, CertError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Invalid(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| CertError::Invalid(e.to_string()))?;
    let builder = ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(pem) {
                let ca = ca.map_err(|e| CertError::Invalid(format!("client CA: {e}")))?;
                roots.add(ca).map_err(|e| CertError::Invalid(format!("client CA: {e}")))?;
            }
            if roots.is_empty() {
                return Err(CertError::Invalid("client CA: no certificate in it".into()));
            }
            let verifier = tokio_rustls::rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .allow_unauthenticated()
                .build()
                .map_err(|e| CertError::Invalid(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| CertError::Invalid(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Re-reads (and, self-managed, renews) the certificate every minute.
pub async fn keep_fresh(client: Client, opts: CertOptions, tls: Arc<RwLock<Arc<ServerConfig>>>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        match load(&client, &opts).await {
            Ok(config) => *tls.write().unwrap_or_else(|p| p.into_inner()) = config,
            Err(e) => warn!(error = %e, "cannot reload the serving certificate; serving the current one"),
        }
    }
}

/// (certificate chain, key, CA bundle) from the Secret, issued anew when missing, for other hosts, or
/// with less than a third of its validity left.
async fn ensure(client: &Client, opts: &CertOptions) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>), CertError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &opts.cert_namespace);
    let name = &opts.cert_secret;
    let existing = secrets.get_opt(name).await.map_err(|e| CertError::Secret(name.clone(), e))?;
    let now = time::OffsetDateTime::now_utc();
    let validity = time::Duration::days(i64::from(opts.cert_validity_days.max(1)));
    let hosts = opts.cert_hosts.join(",");
    let field = |s: &Secret, k: &str| s.data.as_ref().and_then(|d| d.get(k)).map(|b| b.0.clone());
    let annotation = |s: &Secret, k: &str| s.metadata.annotations.as_ref().and_then(|a| a.get(k)).cloned();
    if let Some(s) = &existing {
        let not_after = annotation(s, NOT_AFTER).and_then(|t| t.parse::<i64>().ok()).unwrap_or(0);
        let fresh = not_after - now.unix_timestamp() > validity.whole_seconds() / 3;
        if let (true, Some(true), Some(c), Some(k), Some(ca)) = (
            fresh,
            annotation(s, HOSTS).map(|h| h == hosts),
            field(s, "tls.crt"),
            field(s, "tls.key"),
            field(s, "ca.crt"),
        ) {
            return Ok((c, k, ca));
        }
    }
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "weft-webhook-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + validity;
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(opts.cert_hosts.clone())?;
    leaf.distinguished_name.push(DnType::CommonName, opts.cert_hosts.first().cloned().unwrap_or_default());
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = ca.not_before;
    leaf.not_after = ca.not_after;
    let leaf_cert = leaf.signed_by(&leaf_key, &Issuer::new(ca, &ca_key))?;
    // The previous CA stays trusted for a while, so a replica still serving the old certificate works.
    let mut bundle = ca_cert.pem();
    if let Some(old) = existing.as_ref().and_then(|s| field(s, "ca.crt")) {
        let old = String::from_utf8_lossy(&old);
        if let Some(first) = old.split_inclusive("-----END CERTIFICATE-----").next() {
            bundle.push_str(first.trim_start());
            bundle.push('\n');
        }
    }
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": opts.cert_namespace,
            "annotations": {NOT_AFTER: leaf.not_after.unix_timestamp().to_string(), HOSTS: hosts}},
        "data": {
            "tls.crt": ByteString(leaf_cert.pem().into_bytes()),
            "tls.key": ByteString(leaf_key.serialize_pem().into_bytes()),
            "ca.crt": ByteString(bundle.into_bytes()),
        },
    });
    let written = secrets
        .patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&secret))
        .await
        .map_err(|e| CertError::Secret(name.clone(), e))?;
    info!(secret = %name, hosts = %opts.cert_hosts.join(","), "issued the webhook's serving certificate");
    match (field(&written, "tls.crt"), field(&written, "tls.key"), field(&written, "ca.crt")) {
        (Some(c), Some(k), Some(ca)) => Ok((c, k, ca)),
        _ => Err(CertError::Invalid(format!("Secret {name} lost its keys"))),
    }
}

/// Puts the CA bundle into every webhook of the configuration (a missing configuration is reported,
/// not fatal: the chart may not have created it yet).
async fn patch_ca_bundle(client: &Client, name: &str, ca: &[u8]) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let current = match api.get_opt(name).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            warn!(configuration = %name, "no such ValidatingWebhookConfiguration; its caBundle is not managed");
            return;
        }
        Err(e) => {
            warn!(configuration = %name, error = %e, "cannot read the ValidatingWebhookConfiguration");
            return;
        }
    };
    let bundle = ByteString(ca.to_vec());
    let webhooks = current.webhooks.unwrap_or_default();
    if webhooks.iter().all(|w| w.client_config.ca_bundle.as_ref() == Some(&bundle)) {
        return;
    }
    let patched: Vec<_> = webhooks
        .into_iter()
        .map(|mut w| {
            w.client_config.ca_bundle = Some(bundle.clone());
            w
        })
        .collect();
    let patch = json!({"webhooks": patched});
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => info!(configuration = %name, "caBundle updated"),
        Err(e) => warn!(configuration = %name, error = %e, "cannot update the caBundle"),
    }
}
