//! Shared helpers for xlb's criterion benchmarks.
