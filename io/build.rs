//! Compiles the XDP program (`../bpf/xlb.bpf.c`) with clang via libbpf-cargo.
//! The object is embedded with `include_bytes!` and opened with libbpf-rs's
//! `ObjectBuilder`: an owned `Object` has no borrowed lifetimes, where a
//! generated skeleton borrows its `OpenObject` storage and would make the
//! loader self-referential.
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "../bpf/xlb.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("xlb.bpf.o");
    SkeletonBuilder::new()
        .source(SRC)
        .obj(&obj)
        // Debian keeps asm/types.h under the multiarch include directory.
        .clang_args(["-I/usr/include/x86_64-linux-gnu", "-O2", "-Wall", "-Werror"])
        .build()
        .expect("compile bpf/xlb.bpf.c (needs clang; run scripts/deps.sh)");
    for f in [
        SRC,
        "../bpf/xlb_consts.h",
        "../bpf/xlb_structs.h",
        "../bpf/xlb_maps.h",
        "../bpf/xlb_parse.h",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
}
