//! Access log sinks: one writer thread per destination (shared by every logger that names
//! it), fed through a bounded queue. The data path never waits: when the queue is full the
//! line is dropped and counted. The writer flushes whenever the queue runs empty.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Lines queued per destination before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// Where lines go.
#[derive(Debug)]
pub struct Sink {
    tx: SyncSender<String>,
    dropped: AtomicU64,
}

// === impl Sink ===

impl Sink {
    /// Queues a line without blocking.
    pub fn write(&self, line: String) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The process's access log destinations, shared so two loggers writing to one file share
/// one writer.
#[derive(Debug, Default)]
pub struct AccessLogManager {
    sinks: Mutex<HashMap<String, Weak<Sink>>>,
}

// === impl AccessLogManager ===

impl AccessLogManager {
    /// The process's manager: every logger writing to one path shares its writer.
    pub fn global() -> &'static AccessLogManager {
        static GLOBAL: std::sync::OnceLock<AccessLogManager> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(AccessLogManager::default)
    }

    /// The sink for a path (`/dev/stdout` and `/dev/stderr` write to the process's
    /// streams), opening the file and starting its writer on first use.
    pub fn sink(&self, path: &str) -> std::io::Result<Arc<Sink>> {
        let mut sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = sinks.get(path).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let out: Box<dyn Write + Send> = match path {
            "/dev/stdout" => Box::new(std::io::stdout()),
            "/dev/stderr" => Box::new(std::io::stderr()),
            p => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run(rx, out))?;
        let sink = Arc::new(Sink {
            tx,
            dropped: AtomicU64::new(0),
        });
        sinks.retain(|_, w| w.strong_count() > 0);
        sinks.insert(path.to_string(), Arc::downgrade(&sink));
        Ok(sink)
    }
}

/// Writes lines until every sender is gone, flushing when the queue is empty.
fn run(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        if out.write_all(line.as_bytes()).is_err() {
            continue;
        }
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(line.as_bytes());
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_and_sinks_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let path = path.to_str().unwrap();
        let mgr = AccessLogManager::default();
        let a = mgr.sink(path).unwrap();
        let b = mgr.sink(path).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        a.write("one\n".into());
        b.write("two\n".into());
        drop((a, b));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap();
            if text == "one\ntwo\n" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{text:?}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
