//! The io crate mirrors constants of the XDP program (`bpf/xlb_consts.h`):
//! the numbering of its per-action counters, the XSKMAP capacity, the
//! wildcard port and the range length past which user space writes one
//! wildcard key. This test reads the headers, and the compiled object's map
//! definitions, and fails when a value on one side is not the value on the
//! other. No root needed: the object is opened, not loaded. The maps' key
//! and value sizes, which only a loaded map reports, are checked against
//! the Rust layouts in `xdp::program`'s tests.

use std::collections::HashMap;
use std::path::PathBuf;

use libbpf_rs::ObjectBuilder;
use xlb_io::xdp::loader::XLB_BPF_OBJ;
use xlb_io::xdp::maps::{MAX_QUEUES, PORT_ANY, RANGE_WILDCARD_MIN};
use xlb_io::xdp::stats::{Stat, STAT_SLOTS};

fn header(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../bpf")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"))
}

/// A decimal or 0x-hex C integer literal.
fn number(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches(['u', 'U', 'l', 'L']);
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Every `#define NAME <integer>` of a header.
fn defines(text: &str) -> HashMap<String, i64> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.trim().strip_prefix("#define")?.split_whitespace();
            let (name, value) = (w.next()?, w.next()?);
            Some((name.to_string(), number(value)?))
        })
        .collect()
}

/// The `NAME = value` members of `enum <name> { ... }`, in order.
fn enum_members(text: &str, name: &str) -> Vec<(String, i64)> {
    let start = text
        .find(&format!("enum {name} {{"))
        .unwrap_or_else(|| panic!("no enum {name}"));
    let body = &text[start..];
    let body = &body[body.find('{').expect("enum body") + 1..body.find('}').expect("enum end")];
    // Drop comments, then split members at commas.
    let mut clean = String::new();
    let mut rest = body;
    while let Some(i) = rest.find("/*") {
        clean.push_str(&rest[..i]);
        rest = &rest[rest[i..].find("*/").map_or(rest.len(), |j| i + j + 2)..];
    }
    clean.push_str(rest);
    clean
        .split(',')
        .filter_map(|m| {
            let (n, v) = m.split_once('=')?;
            Some((n.trim().to_string(), number(v)?))
        })
        .collect()
}

/// `RedirectVip` -> `REDIRECT_VIP`.
fn screaming(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[test]
fn the_counters_are_numbered_alike_on_both_sides() {
    let c = enum_members(&header("xlb_consts.h"), "xlb_stat");
    let slots = c
        .iter()
        .find(|(n, _)| n == "XLB_STAT_MAX")
        .map(|(_, v)| *v)
        .expect("XLB_STAT_MAX");
    assert_eq!(slots, STAT_SLOTS as i64, "XLB_STAT_MAX vs STAT_SLOTS");
    let counters: Vec<&(String, i64)> = c.iter().filter(|(n, _)| n != "XLB_STAT_MAX").collect();
    for s in Stat::ALL {
        let name = format!("XLB_STAT_{}", screaming(&format!("{s:?}")));
        let v = counters
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("Stat::{s:?} has no {name} in xlb_consts.h"));
        assert_eq!(v, s as i64, "{name} vs Stat::{s:?}");
    }
    assert_eq!(
        counters.len(),
        Stat::ALL.len(),
        "every counter of enum xlb_stat has a Stat: {counters:?}"
    );
    assert!(counters.iter().all(|(_, v)| *v < slots));
}

#[test]
fn shared_constants_have_one_value() {
    let d = defines(&header("xlb_consts.h"));
    let get = |n: &str| *d.get(n).unwrap_or_else(|| panic!("no #define {n}"));
    assert_eq!(
        get("XLB_MAX_QUEUES"),
        i64::from(MAX_QUEUES),
        "XSKMAP capacity"
    );
    assert_eq!(get("XLB_PORT_ANY"), i64::from(PORT_ANY), "wildcard port");
    assert_eq!(
        get("XLB_RANGE_WILDCARD_MIN"),
        i64::from(RANGE_WILDCARD_MIN),
        "longest port range written port by port"
    );
}

#[test]
fn the_compiled_maps_are_sized_as_user_space_indexes_them() {
    let obj = ObjectBuilder::default()
        .open_memory(XLB_BPF_OBJ)
        .expect("open the compiled XDP object");
    let entries: HashMap<String, u32> = obj
        .maps()
        .map(|m| (m.name().to_string_lossy().into_owned(), m.max_entries()))
        .collect();
    assert_eq!(entries.get("xsks_map"), Some(&MAX_QUEUES), "{entries:?}");
    assert_eq!(
        entries.get("stats"),
        Some(&(STAT_SLOTS as u32)),
        "{entries:?}"
    );
    assert_eq!(entries.get("config"), Some(&1), "one config entry, key 0");
    for m in ["vip_ports", "vip_addrs", "snat_addrs", "backends"] {
        assert!(entries.contains_key(m), "{m} missing: {entries:?}");
    }
}
