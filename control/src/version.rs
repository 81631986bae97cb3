//! What xlb was built from: the package version and the git commit (set by
//! `build.rs`; "unknown" when built outside a git checkout). `xlb
//! --version`, `GET /version` and the `xlb_build_info` metric all say the same.

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit xlb was built from (12 hex digits), or "unknown".
pub const COMMIT: &str = env!("XLB_GIT_COMMIT");

/// `xlb --version`'s text after the program name.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("XLB_GIT_COMMIT"),
    ")"
);
