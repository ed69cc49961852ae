//! How each tool is invoked: the argv, environment and result parsing of
//! every job kind. Nothing here spawns; the runner does.

pub mod ansible;
pub mod terraform;
