//! Weft: supply-chain integrity for Argo CD.
//!
//! A pure core (`selection`, `target`, `status`) computes verdicts from observations; thin adapters
//! (`controller` for Kubernetes) do the I/O.
#![forbid(unsafe_code)]

pub mod admission;
pub mod bundle;
pub mod cluster;
pub mod commands;
pub mod controller;
pub mod crds;
pub mod deref;
pub mod health;
pub mod images;
pub mod keyless;
pub mod kubeclient;
pub mod lease;
pub mod manifest;
pub mod metrics;
pub mod oci;
pub mod pipeline;
pub mod provenance;
pub mod publish;
pub mod reason;
pub mod rekor;
pub mod rekor2;
pub mod render;
pub mod resources;
pub mod selection;
pub mod shards;
pub mod signing;
pub mod source;
pub mod status;
pub mod target;
pub mod webhook;
