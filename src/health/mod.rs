//! Health checks (layer 3): one checker per node publishing role, health and lag snapshots. Placeholder
//! until the routing issue; today topology comes from config only (see `session::Generation`).
