//! Signing and publishing the manifests: the signing key (`key`), keyless certificates from Fulcio
//! (`keyless`), and the signed manifest image with its signatures and attestations (`publish`).

pub mod key;
pub mod keyless;
pub mod publish;
