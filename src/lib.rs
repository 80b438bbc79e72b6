//! Weft: supply-chain integrity for Argo CD.
//!
//! A pure core (`selection`, `target`, `status`) computes verdicts from observations; thin adapters
//! (`controller` for Kubernetes) do the I/O.
#![forbid(unsafe_code)]

pub mod controller;
pub mod crds;
pub mod resources;
pub mod selection;
pub mod status;
pub mod target;
