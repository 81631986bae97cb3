//! xlb-pktgen and the benchmark harness. Placeholder.
