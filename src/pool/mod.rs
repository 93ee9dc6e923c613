//! pool (stub).
