//! auth (stub).
