//! session (stub).
