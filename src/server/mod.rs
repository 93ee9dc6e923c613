//! server (stub).
