//! Weft: supply-chain integrity for Argo CD.
//!
//! One folder per step of the pipeline — `source`, `render`, `images`, `signing` (signing and
//! publishing), `provenance` (statements and the transparency log), `admission` — each with a pure core
//! and thin adapters; `pipeline` runs the steps for one revision, and `status` computes what the record
//! says from what they reported, with the reasons in `reason`. `kubernetes` holds the adapters to the
//! cluster (the controller, leader election, what a profile refers to); `commands` the command line.
#![forbid(unsafe_code)]

pub mod admission;
pub mod bundle;
pub mod commands;
pub mod crds;
pub mod health;
pub mod images;
pub mod kubernetes;
pub mod metrics;
pub mod oci;
pub mod pipeline;
pub mod provenance;
pub mod reason;
pub mod referenced;
pub mod render;
pub mod repository;
pub mod resources;
pub mod selection;
pub mod signing;
pub mod source;
pub mod status;
pub mod target;
