//! keygate: an API-key gateway for LLM-application platforms.
//!
//! Domains (`users`, `sessions`, `keys`, `flows`, and the `gateway` that
//! runs flows) sit over a thin shared core (`config`, `db`, `error`,
//! `auth`, `state`, `server`, plus `crypto` for secrets at rest and
//! `outbound` for every outbound HTTP call). `main.rs` only
//! parses the command line; the tests drive [`server`] directly.

pub mod auth;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod db;
pub mod error;
pub mod flows;
pub mod gateway;
pub mod keys;
pub mod outbound;
pub mod random;
pub mod server;
pub mod sessions;
pub mod state;
pub mod ui;
pub mod users;
pub mod variables;
