//! How long istio-iptables' rule generation takes for the injector's default sidecar
//! config and for a large one (many ports and CIDRs, DNS capture, TPROXY, IPv6).
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use iptables_init::builder::Family;
use iptables_init::capture::plan;
use iptables_init::cli::{Env, parse_args, resolve};
use iptables_init::config::{Config, DnsServer};
use iptables_init::system::System;

struct Fixed;

impl System for Fixed {
    fn pod_is_ipv6(&self, _: bool) -> Result<bool, String> {
        Ok(true)
    }
    fn nameservers(&self) -> Result<Vec<DnsServer>, String> {
        Ok(vec!["10.96.0.10".parse().map_err(|e: String| e)?])
    }
    fn uid_of(&self, _: &str) -> Option<u32> {
        None
    }
}

struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

fn config(args: &[&str]) -> Config {
    let mut argv = vec!["iptables-init"];
    argv.extend_from_slice(args);
    let flags = parse_args(argv).unwrap_or_else(|e| panic!("bad bench args: {e}"));
    resolve(&flags, &NoEnv, &Fixed).unwrap_or_else(|e| panic!("bad bench config: {e}"))
}

fn bench(c: &mut Criterion) {
    let default = config(&[
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-x",
        "",
        "-b",
        "*",
        "-d",
        "15090,15021,15020",
    ]);
    let ports: Vec<String> = (20000..20100).map(|p| p.to_string()).collect();
    let cidrs: Vec<String> = (0..100).map(|i| format!("10.{i}.0.0/16")).collect();
    let (ports, cidrs) = (ports.join(","), cidrs.join(","));
    let large = config(&[
        "-m",
        "TPROXY",
        "-b",
        &ports,
        "-q",
        &ports,
        "-o",
        &ports,
        "-i",
        &cidrs,
        "-x",
        &cidrs,
        "--redirect-dns",
        "-k",
        "eth1,eth2",
        "-u",
        "1337,1338",
        "-g",
        "1337,1338",
    ]);
    c.bench_function("iptables/plan+render default sidecar", |b| {
        b.iter(|| {
            let p = plan(std::hint::black_box(&default));
            p.rules.restore_input(Family::V4).len() + p.rules.restore_input(Family::V6).len()
        })
    });
    c.bench_function(
        "iptables/plan+render 100 ports x 100 CIDRs, TPROXY, DNS, IPv6",
        |b| {
            b.iter(|| {
                let p = plan(std::hint::black_box(&large));
                p.rules.restore_input(Family::V4).len() + p.rules.restore_input(Family::V6).len()
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
