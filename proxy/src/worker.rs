//! Which worker thread runs the current task, for Envoy's per-worker stats
//! (`listener.<address>.worker_<N>.*`).
//!
//! Envoy's workers each own their connections. Here the data plane is one multi-threaded
//! runtime; a connection is counted on the worker that accepted it.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNT: OnceLock<usize> = OnceLock::new();
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Sets the number of workers (`--concurrency`); the first call wins.
pub fn set_count(n: usize) {
    let _ = COUNT.set(n.max(1));
}

/// The number of workers (1 until [`set_count`]).
pub fn count() -> usize {
    COUNT.get().copied().unwrap_or(1)
}

/// Registers the calling thread as the next worker. The data runtime calls it from
/// `on_thread_start`: its worker threads start first, so they take indices `0..count`;
/// later threads (the blocking pool) get none.
pub fn register_thread() {
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    if i < count() {
        INDEX.with(|c| c.set(Some(i)));
    }
}

/// The current thread's worker index; 0 off the workers (tests, the blocking pool).
pub fn current() -> usize {
    INDEX.with(Cell::get).unwrap_or(0)
}
