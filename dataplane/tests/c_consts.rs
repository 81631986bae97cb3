//! The XDP program (C) and the dataplane (Rust) must agree on what they
//! both decide by: protocol numbers, EtherTypes, IPv4 fragment bits, and
//! which ICMP messages are errors that quote a translated packet. This test
//! reads the program's headers and fails when a value, or the outcome of an
//! ICMP error predicate for any type, differs from the Rust one.

use std::collections::HashMap;
use std::path::PathBuf;

use xlb_dataplane::wire::{ethernet::ethertype, icmp, ipv4, ipv6, proto};

/// Where the XDP program's headers are, from this crate's directory (the
/// one place to change if they move).
const C_HEADERS: &str = "../bpf";

/// The headers' text, by file name.
fn headers() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(C_HEADERS);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the XDP program's headers in {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "h"))
        .map(|p| {
            let name = p
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&p).expect("a readable header");
            (name, text)
        })
        .collect();
    out.sort();
    assert!(
        out.iter().any(|(n, _)| n == "xlb_consts.h"),
        "no xlb_consts.h in {}",
        dir.display()
    );
    out
}

/// Every `#define NAME VALUE` with a numeric value (decimal or hex).
fn defines(headers: &[(String, String)]) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for (_, text) in headers {
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("#define") {
                continue;
            }
            let (Some(name), Some(value)) = (w.next(), w.next()) else {
                continue;
            };
            if let Some(v) = number(value) {
                out.insert(name.to_string(), v);
            }
        }
    }
    out
}

fn number(s: &str) -> Option<i64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[test]
fn shared_constants_agree() {
    let d = defines(&headers());
    let want: &[(&str, i64)] = &[
        ("XLB_IPPROTO_ICMP", proto::ICMP.into()),
        ("XLB_IPPROTO_TCP", proto::TCP.into()),
        ("XLB_IPPROTO_UDP", proto::UDP.into()),
        ("XLB_IPPROTO_ICMPV6", proto::ICMPV6.into()),
        ("XLB_IPPROTO_SCTP", proto::SCTP.into()),
        ("XLB_IPPROTO_FRAGMENT", ipv6::next_header::FRAGMENT.into()),
        ("XLB_ETH_P_IP", ethertype::IPV4.into()),
        ("XLB_ETH_P_IPV6", ethertype::IPV6.into()),
        ("XLB_ETH_P_8021Q", ethertype::VLAN.into()),
        ("XLB_ETH_P_8021AD", ethertype::QINQ.into()),
        ("XLB_IP_OFFSET", ipv4::OFFSET_MASK.into()),
        ("XLB_IP_MF", ipv4::FLAG_MF.into()),
        ("XLB_ICMP_DEST_UNREACH", icmp::v4::DEST_UNREACH.into()),
        ("XLB_ICMP_TIME_EXCEEDED", icmp::v4::TIME_EXCEEDED.into()),
        ("XLB_ICMP_PARAM_PROBLEM", icmp::v4::PARAM_PROBLEM.into()),
        ("XLB_ICMPV6_DEST_UNREACH", icmp::v6::DEST_UNREACH.into()),
        ("XLB_ICMPV6_PARAM_PROBLEM", icmp::v6::PARAM_PROBLEM.into()),
    ];
    let wrong: Vec<String> = want
        .iter()
        .filter(|&&(name, v)| d.get(name) != Some(&v))
        .map(|&(name, v)| format!("{name}: C {:?}, Rust {v}", d.get(name)))
        .collect();
    assert!(wrong.is_empty(), "C and Rust disagree: {wrong:#?}");
}

/// The XDP program steers an ICMP message as an error about a translated
/// packet exactly when the dataplane translates it as one: its predicates
/// give, for every type, what `icmp::is_error` gives.
#[test]
fn icmp_error_predicates_agree() {
    let h = headers();
    let d = defines(&h);
    for (func, v4) in [("xlb_icmp4_is_error", true), ("xlb_icmp6_is_error", false)] {
        let expr = return_expr(&h, func);
        for t in 0..=255u8 {
            let c = Expr::new(&expr, &d, t).eval();
            assert_eq!(
                c,
                icmp::is_error(v4, t),
                "{func}({t}) is {c} in C, not in Rust ({expr})"
            );
        }
    }
}

/// The expression a one-line C predicate `func` returns.
fn return_expr(headers: &[(String, String)], func: &str) -> String {
    let text = headers
        .iter()
        .map(|(_, t)| t.as_str())
        .find(|t| t.contains(&format!("{func}(")))
        .unwrap_or_else(|| panic!("{func} is in no header"));
    let at = text.find(&format!("{func}(")).expect("found above");
    let body = &text[at..];
    let ret = body.find("return").expect("a return statement") + "return".len();
    let end = body[ret..].find(';').expect("a ';'") + ret;
    body[ret..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A C expression over the variable `type`, integer literals and defines,
/// with `==`, `!=`, `<`, `<=`, `>`, `>=`, `&&`, `||` and parentheses: what
/// the predicates are made of. Anything else fails the test.
struct Expr<'a> {
    tokens: Vec<String>,
    at: usize,
    defines: &'a HashMap<String, i64>,
    ty: i64,
}

impl<'a> Expr<'a> {
    fn new(src: &str, defines: &'a HashMap<String, i64>, ty: u8) -> Expr<'a> {
        let mut tokens = Vec::new();
        let cs: Vec<char> = src.chars().collect();
        let mut i = 0;
        while i < cs.len() {
            let c = cs[i];
            if c.is_whitespace() {
                i += 1;
            } else if c.is_alphanumeric() || c == '_' {
                let s = i;
                while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_') {
                    i += 1;
                }
                tokens.push(cs[s..i].iter().collect());
            } else {
                let two: String = cs[i..(i + 2).min(cs.len())].iter().collect();
                let op = ["==", "!=", "<=", ">=", "&&", "||"]
                    .into_iter()
                    .find(|o| two == *o)
                    .map(str::to_string)
                    .unwrap_or_else(|| c.to_string());
                i += op.len();
                tokens.push(op);
            }
        }
        Expr {
            tokens,
            at: 0,
            defines,
            ty: i64::from(ty),
        }
    }

    fn eval(mut self) -> bool {
        let v = self.or();
        assert_eq!(
            self.at,
            self.tokens.len(),
            "trailing tokens in {:?}",
            self.tokens
        );
        v != 0
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn next(&mut self) -> String {
        let t = self.tokens.get(self.at).cloned().expect("more tokens");
        self.at += 1;
        t
    }

    fn or(&mut self) -> i64 {
        let mut v = self.and();
        while self.peek() == Some("||") {
            self.next();
            let r = self.and();
            v = i64::from(v != 0 || r != 0);
        }
        v
    }

    fn and(&mut self) -> i64 {
        let mut v = self.cmp();
        while self.peek() == Some("&&") {
            self.next();
            let r = self.cmp();
            v = i64::from(v != 0 && r != 0);
        }
        v
    }

    fn cmp(&mut self) -> i64 {
        let a = self.atom();
        let op = match self.peek() {
            Some(o @ ("==" | "!=" | "<" | "<=" | ">" | ">=")) => o.to_string(),
            _ => return a,
        };
        self.next();
        let b = self.atom();
        i64::from(match op.as_str() {
            "==" => a == b,
            "!=" => a != b,
            "<" => a < b,
            "<=" => a <= b,
            ">" => a > b,
            _ => a >= b,
        })
    }

    fn atom(&mut self) -> i64 {
        let t = self.next();
        if t == "(" {
            let v = self.or();
            assert_eq!(self.next(), ")");
            return v;
        }
        if t == "type" {
            return self.ty;
        }
        number(&t)
            .or_else(|| self.defines.get(&t).copied())
            .unwrap_or_else(|| panic!("`{t}` is neither a number nor a define"))
    }
}
