//! admin (stub).
