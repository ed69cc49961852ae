//! pgcluster-api: an HTTP API that provisions and configures a replicated
//! PostgreSQL cluster by driving `terraform` and `ansible-playbook`.

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod disk;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod render;
pub mod request_id;
pub mod routes;
pub mod runner;
pub mod secret;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod tools;
pub mod workspace;
