//! pgsluice: a database-aware reverse proxy and connection pooler for PostgreSQL.
//!
//! The crate is layered; a module may only use modules of a lower layer (see
//! `docs/ARCHITECTURE.md`, enforced by `tests/layers.rs`):
//!
//! | layer | modules |
//! |---|---|
//! | 0 | `protocol`, `config`, `topology`, `metrics`, `logging`, `devcluster` |
//! | 1 | `net`, `auth`, `router` |
//! | 2 | `server` |
//! | 3 | `pool`, `health` |
//! | 4 | `session`, `admin` |
//! | 5 | `app`, `cli` |

pub mod config;
pub mod devcluster;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod topology;

pub mod auth;
pub mod net;
pub mod router;

pub mod server;

pub mod health;
pub mod pool;

pub mod admin;
pub mod session;

pub mod app;
pub mod cli;
