//! keygate: an API-key gateway for LLM-application platforms.
//!
//! The crate is layered; every import points down (a test in the suite
//! reads `src/` and fails on an upward or circular import):
//!
//! - core: `metrics` (below everything, so every layer may count);
//!   `error`, `random`, `request_id`, `cache`, `client_ip`, `hosts` (leaves); `db`, `token`, `validate`,
//!   `routing`, `identity` (who is calling); `config`; `crypto`,
//!   `outbound`, `bus` (the invalidation bus); `state` (what every handler
//!   shares).
//! - domains, each owning its tables, rules and routes: `audit` (the log
//!   the others write to), `sessions`, `users`, `keys`, `credentials` and
//!   `variables`, `flows`.
//! - above them: the `auth` middleware that reads a request and asks the
//!   domains who it comes from, the `deadline` on request bodies, the `gateway` that runs flows, the `ui`,
//!   the `openapi` document describing them, then `server` (assembles the app)
//!   and `cli`; `langflow_import` (the `import-langflow` command) sits beside
//!   the gateway and the UI.
//!
//! `main.rs` only parses the command line; the tests drive [`server`]
//! directly.

pub mod audit;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod db;
pub mod deadline;
pub mod error;
pub mod flows;
pub mod gateway;
pub mod hosts;
pub mod identity;
pub mod keys;
pub mod langflow_import;
pub mod log_sink;
pub mod metrics;
pub mod openapi;
pub mod outbound;
pub mod random;
pub mod request_id;
pub mod routing;
pub mod server;
pub mod sessions;
pub mod state;
pub mod token;
pub mod ui;
pub mod users;
pub mod validate;
pub mod variables;
