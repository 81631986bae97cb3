//! The `xlb` binary (daemon and operator CLI). Placeholder until the control plane lands.
fn main() {
    eprintln!("xlb: the daemon and CLI are not built yet (see the open issues)");
    std::process::exit(2);
}
