//! router (stub).
