//! Checked packet views (see the wire helper's contract).
