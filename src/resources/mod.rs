//! The Kubernetes resources Weft defines (`IntegrityProfile`, `ApplicationProvenance`) and the parts of
//! Argo CD's it reads.

pub mod argocd;
pub mod profile;
pub mod provenance;
