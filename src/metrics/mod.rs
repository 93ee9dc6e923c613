//! metrics (stub).
