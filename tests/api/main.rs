//! Integration tests: the real HTTP server on port 0, with fake tools under
//! `tests/fakes` for process handling and the real terraform and
//! ansible-playbook where the behaviour of the real tools matters.

mod ansible;
mod approvals;
mod architecture;
mod auth;
mod backups;
mod cluster;
mod deploy;
mod faults;
mod guardrails;
mod ha;
mod helpers;
mod hostile;
mod injection;
mod jobs;
mod lab;
mod openapi;
mod operate;
mod real_tools;
mod runner;
mod schedule;
mod schemathesis;
mod server_process;
mod swagger_ui;
mod terraform;
mod vault;
mod webhooks;
mod workspaces;
