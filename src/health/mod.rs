//! health (stub).
