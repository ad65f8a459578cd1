//! Steady traffic from one pod while a scenario changes things underneath: sequential
//! requests, each on a new connection from the app, every outcome counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::mesh::client::{self, Outcome};
use crate::mesh::{CallKind, Mesh, MeshError};

/// Requests in flight from one pod; stop it to get the tally.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<std::io::Result<Tally>>,
}

/// What a load run saw.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub ok: u32,
    pub failed: u32,
    /// The first few failures, for the matrix.
    pub failures: Vec<String>,
}

// === impl Load ===

impl Load {
    /// Starts making `call` from `from` every `gap` until stopped; an HTTP request succeeds
    /// with a 200, a TCP connection (a new mTLS handshake between sidecars each time) when
    /// the echo answers.
    pub fn start(
        mesh: &Mesh,
        from: &str,
        call: &crate::mesh::Call,
        gap: Duration,
    ) -> Result<Self, MeshError> {
        let kind = call.kind.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = mesh.pod(from)?.ns.spawn(move || Ok(run(&kind, &flag, gap)));
        Ok(Self { stop, handle })
    }

    /// Stops and returns the tally.
    pub fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.join() {
            Ok(Ok(tally)) => tally,
            Ok(Err(e)) => Tally {
                failed: 1,
                failures: vec![format!("load thread failed: {e}")],
                ..Tally::default()
            },
            Err(_) => Tally {
                failed: 1,
                failures: vec!["load thread panicked".into()],
                ..Tally::default()
            },
        }
    }
}

fn run(kind: &CallKind, stop: &AtomicBool, gap: Duration) -> Tally {
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let outcome = match kind {
            CallKind::Http(req) => client::http_here(req),
            CallKind::Tcp(addr) => client::tcp_here(*addr, "ping"),
        };
        match outcome {
            Outcome::Http { status: 200, .. } | Outcome::Tcp(_) => tally.ok += 1,
            other => {
                tally.failed += 1;
                if tally.failures.len() < 3 {
                    tally.failures.push(crate::mesh::report::describe(&other));
                }
            }
        }
        std::thread::sleep(gap);
    }
    tally
}

// === impl Tally ===

impl Tally {
    /// `0 failed of 412`, with the first failures.
    pub fn describe(&self) -> String {
        let mut s = format!("{} failed of {}", self.failed, self.ok + self.failed);
        if !self.failures.is_empty() {
            s.push_str(&format!(" ({})", self.failures.join("; ")));
        }
        s
    }

    pub fn passed(&self) -> bool {
        self.failed == 0 && self.ok > 0
    }
}
