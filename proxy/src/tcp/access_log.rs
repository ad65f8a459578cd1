//! tcp_proxy's `access_log`: the same loggers and format strings as the HTTP connection
//! manager's, with what a TCP connection has (no request or response headers, no status,
//! `%PROTOCOL%` is `-`), written when the connection closes.

use std::time::{Instant, SystemTime};

use super::{Outcome, Report, TcpProxy};
use crate::config::{ConfigError, Context as _};
use crate::conn::Downstream;
use crate::http::access_log::{AccessLog, AccessLogManager};
use crate::http::format::{Context, Headers};
use crate::http::stream_info::{Protocol, ResponseFlag, StreamInfo};
use crate::upstream::ConnectError;

/// When a connection started, for `%START_TIME%` and `%DURATION%`.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub at: SystemTime,
    pub instant: Instant,
}

// === impl Started ===

impl Started {
    pub fn now() -> Self {
        Self {
            at: SystemTime::now(),
            instant: Instant::now(),
        }
    }
}

/// Compiles a tcp_proxy's access logs; a bad one names its index.
pub fn build(
    config: &super::TcpProxyConfig,
    mgr: &AccessLogManager,
) -> Result<Vec<AccessLog>, ConfigError> {
    let mut logs = Vec::new();
    for (i, proto) in config.access_log.iter().enumerate() {
        if let Some(log) = AccessLog::new(proto, mgr).at(format!("access_log[{i}]"))? {
            logs.push(log);
        }
    }
    Ok(logs)
}

// === impl TcpProxy ===

impl TcpProxy {
    /// Writes the connection's access log lines, if the filter has loggers.
    pub fn log(&self, conn: &Downstream, outcome: &Outcome, report: &Report) {
        if self.access_logs.is_empty() {
            return;
        }
        let info = stream_info(conn, outcome, report);
        let ctx = Context {
            info: &info,
            downstream: conn,
            request: Headers::None,
            response: Headers::None,
        };
        for log in &self.access_logs {
            log.log(&ctx);
        }
    }
}

fn stream_info(conn: &Downstream, outcome: &Outcome, report: &Report) -> StreamInfo {
    use std::sync::atomic::Ordering::Relaxed;
    let mut info = StreamInfo::new(Protocol::Tcp, conn.peer);
    if let Some(started) = report.started {
        info.start = started.at;
        info.started = started.instant;
    }
    info.finished = Some(info.started.elapsed());
    info.bytes_received = report.bytes.received.load(Relaxed);
    info.bytes_sent = report.bytes.sent.load(Relaxed);
    info.upstream.cluster = report.cluster.clone();
    info.upstream.host = report.host.as_ref().map(|h| h.addr.clone());
    info.upstream.local = report.upstream_local;
    info.upstream.attempts = report.attempts;
    if let Some(flag) = flag(outcome) {
        info.flags.set(flag);
    }
    if report.attempts_exhausted {
        info.flags.set(ResponseFlag::UpstreamRetryLimitExceeded);
    }
    if let Outcome::ConnectFailed(ConnectError::Failed(e)) = outcome {
        info.upstream.transport_failure =
            Some(crate::http::pool::transport_failure(e).into_boxed_str());
    }
    info
}

/// Envoy's response flag for how a tcp_proxy connection ended.
fn flag(outcome: &Outcome) -> Option<ResponseFlag> {
    Some(match outcome {
        Outcome::NoRoute => ResponseFlag::NoClusterFound,
        Outcome::ConnectFailed(ConnectError::Overflow) => ResponseFlag::UpstreamOverflow,
        Outcome::ConnectFailed(ConnectError::NoHealthyUpstream) => ResponseFlag::NoHealthyUpstream,
        Outcome::ConnectFailed(_) => ResponseFlag::UpstreamConnectionFailure,
        Outcome::Idle => ResponseFlag::StreamIdleTimeout,
        Outcome::MaxDuration => ResponseFlag::DurationTimeout,
        Outcome::Done { .. } | Outcome::Error(_) => return None,
    })
}
