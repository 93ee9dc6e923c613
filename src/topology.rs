//! topology (stub).
