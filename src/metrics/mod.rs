//! Metrics (layer 0): the registry and metric families. Placeholder until the operations issue adds
//! Prometheus metrics; nothing records into it yet.
