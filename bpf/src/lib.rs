//! xlb's kernel glue (XDP program, loader, AF_XDP I/O). Placeholder.
