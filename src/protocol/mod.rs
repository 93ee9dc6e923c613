//! protocol (stub).
