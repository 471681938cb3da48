//! The integration suite, one binary: each module starts real keygate
//! servers (in process or as the real binary) and talks to them over HTTP
//! on loopback, against SQLite and against the real PostgreSQL server.

mod account_safety;
mod cache;
mod common;
mod credentials;
mod edge;
mod flows;
mod gateway;
mod hardening;
mod hot_paths;
mod keys;
mod layers;
mod migrations;
mod ops;
mod readiness;
mod ui;
mod users;
mod variables;
