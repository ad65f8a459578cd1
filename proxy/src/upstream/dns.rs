//! STRICT_DNS and LOGICAL_DNS: resolving a cluster's names periodically.
//!
//! Resolution uses the system resolver (`getaddrinfo`), which reports no TTL, so
//! `respect_dns_ttl` cannot be honoured: names are re-resolved every `dns_refresh_rate`.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::cluster::Cluster;
use super::host::{Host, HostAddr};
use crate::config::cluster::{Discovery, IpFamily};
use crate::config::endpoint::{EndpointConfig, HostAddress};

/// Resolves the cluster's names now and then every refresh interval, until the cluster is
/// gone. A failed resolution keeps the previous hosts.
pub async fn refresh(cluster: Weak<Cluster>) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let interval = resolve_once(&c).await;
        drop(c);
        tokio::time::sleep(interval).await;
    }
}

async fn resolve_once(cluster: &Arc<Cluster>) -> Duration {
    let (endpoints, refresh, family, logical): (Vec<&EndpointConfig>, _, _, _) =
        match &cluster.config.discovery {
            Discovery::StrictDns {
                endpoints,
                refresh,
                family,
            } => (endpoints.iter().collect(), *refresh, *family, false),
            Discovery::LogicalDns {
                endpoint,
                refresh,
                family,
            } => (vec![endpoint.as_ref()], *refresh, *family, true),
            _ => return Duration::from_secs(3600),
        };
    cluster.stats.update_attempt.inc();
    let mut hosts = Vec::new();
    let mut failed = false;
    for ep in endpoints {
        let addrs = match &ep.address {
            HostAddress::Ip(a) => vec![*a],
            HostAddress::Pipe(p) => {
                hosts.push(Arc::new(Host::new(
                    &cluster.config,
                    ep,
                    HostAddr::Pipe(p.clone()),
                )));
                continue;
            }
            HostAddress::Dns { host, port } => match lookup(host, *port, family).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(
                        cluster = cluster.name(),
                        "DNS resolution of {host} failed: {e}"
                    );
                    failed = true;
                    continue;
                }
            },
        };
        let take = if logical { 1 } else { addrs.len() };
        for addr in addrs.into_iter().take(take) {
            hosts.push(Arc::new(Host::new(&cluster.config, ep, HostAddr::Ip(addr))));
        }
    }
    if failed && hosts.is_empty() {
        // Keep what we had; try again sooner.
        return refresh.min(Duration::from_secs(5));
    }
    cluster.set_hosts(hosts);
    cluster.stats.update_success.inc();
    refresh
}

async fn lookup(host: &str, port: u16, family: IpFamily) -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    match family {
        IpFamily::V4Only => addrs.retain(SocketAddr::is_ipv4),
        IpFamily::V6Only => addrs.retain(SocketAddr::is_ipv6),
        IpFamily::Any { prefer_v4: true } => addrs.sort_by_key(|a| a.is_ipv6()),
        IpFamily::Any { prefer_v4: false } => {}
    }
    addrs.dedup();
    if addrs.is_empty() {
        return Err(std::io::Error::other("no address of the requested family"));
    }
    Ok(addrs)
}
