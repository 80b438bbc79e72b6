//! The adapters to Kubernetes: the controller, the client it uses, leader election and shards, and
//! reading what a profile refers to (and the scope of kinds) from the cluster.

pub mod client;
pub mod controller;
pub mod discovery;
pub mod lease;
pub mod referenced;
pub mod shards;
