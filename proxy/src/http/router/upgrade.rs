//! HTTP/1.1 upgrades (WebSocket): the request goes upstream on a dedicated connection with
//! its `connection`/`upgrade` headers; on `101 Switching Protocols` both sides are joined
//! and bytes are copied until either closes.

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::{Forwarded, Outcome, Router, RouterRequest, Stream, choose};
use crate::config::cluster::UpstreamTransport;
use crate::http::body::RequestBody;
use crate::http::local_reply::LocalReply;
use crate::http::pool::{ClusterHttp, UpstreamProtocol};
use crate::http::stream_info::Protocol;
use crate::tcp::copy::copy_bidirectional;
use crate::upstream::{Cluster, LbContext};

pub(super) async fn forward(
    router: &Router,
    s: Stream<'_>,
    cluster: &Arc<Cluster>,
    ch: &Arc<ClusterHttp>,
    mut req: RouterRequest,
    downstream: OnUpgrade,
) -> Outcome {
    s.info.upstream.attempts = 1;
    let ctx = LbContext {
        original_dst: Some(s.downstream.local),
        original_src: None,
    };
    let Some(host) = choose(cluster, &ctx, None, &[]) else {
        return Outcome::Local(LocalReply::no_healthy_upstream());
    };
    s.info.upstream.host = Some(host.addr.clone());
    s.info.upstream.metadata = host.metadata.clone();
    s.info.upstream.protocol = Some(Protocol::Http11);
    let tls = matches!(host.transport, UpstreamTransport::Tls(_));
    let Some(upstream_req) = req.build(UpstreamProtocol::Http1, tls, RequestBody::Empty, false)
    else {
        return Outcome::Local(LocalReply::upgrade_failed());
    };
    let alpn = s
        .alpn
        .and_then(|a| a.for_protocol(UpstreamProtocol::Http1, req.protocol));
    let pool = router.pools.host(ch, &host, UpstreamProtocol::Http1, alpn);
    let Some(slot) = ch.try_request() else {
        return Outcome::Local(LocalReply::reset(
            &crate::http::local_reply::ResetReason::Overflow,
            false,
        ));
    };
    let started = Instant::now();
    let mut sent = match pool.send_fresh_h1(upstream_req).await {
        Ok(sent) => sent,
        Err(e) => {
            if let Some(t) = e.reason.transport_failure() {
                s.info.upstream.transport_failure = Some(t.into());
            }
            return Outcome::Local(LocalReply::reset(&e.reason, false));
        }
    };
    let status = sent.response.status();
    if status == http::StatusCode::SWITCHING_PROTOCOLS {
        let upstream = hyper::upgrade::on(&mut sent.response);
        tokio::spawn(async move {
            let (Ok(d), Ok(u)) = tokio::join!(downstream, upstream) else {
                return;
            };
            let mut d = TokioIo::new(d);
            let mut u = TokioIo::new(u);
            let _ = copy_bidirectional(&mut d, &mut u, None, &|_, _| {}).await;
        });
    }
    let mut response = sent.response;
    router.finish_response(
        &mut response,
        s.matched,
        None,
        started,
        1,
        s.info,
        s.downstream,
    );
    ch.stats.record_status(status.as_u16());
    s.info.upstream.local = sent.local;
    s.info.upstream.principals = sent.principals.clone();
    s.info.first_upstream_rx = Some(s.info.elapsed());
    Outcome::Upstream(Forwarded {
        response,
        pooled: None,
        slot,
        cluster: ch.clone(),
        started,
        deadline: None,
    })
}
