//! devcluster (stub).
