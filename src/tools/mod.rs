//! How each tool is invoked: the argv, environment and result parsing of
//! every job kind. Nothing here spawns; the runner (or, for the Patroni
//! probe, `cluster::ha`) does.

pub mod ansible;
pub mod patroni;
pub mod terraform;
