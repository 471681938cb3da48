//! The integration suite, one binary: each module starts real keygate
//! servers (in process or as the real binary) and talks to them over HTTP
//! on loopback, against SQLite and against the real PostgreSQL server.

mod account_safety;
mod audit;
mod cache;
mod clients;
mod common;
mod credentials;
mod edge;
mod flows;
mod gateway;
mod hardening;
mod hot_paths;
mod key_filter;
mod keys;
mod langflow;
mod langflow_import;
mod layers;
mod lifecycle;
mod limits;
mod migrations;
mod openapi;
mod operations;
mod ops;
mod readiness;
mod ui;
mod ui_support;
mod users;
mod variables;
