//! Per-node snapshots of xDS resources, and what each stream sent and had acknowledged.
//!
//! Generators replace a node's whole snapshot; streams watch for changes and push what
//! differs. Every response and every ACK or NACK is recorded, so a test can wait until a
//! proxy has accepted the current config, and fail with the proxy's own words if it did not.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use envoy_types::pb::google::protobuf::Any;
use tokio::sync::watch;

/// One named resource and its content version.
#[derive(Clone, Debug)]
pub struct Resource {
    pub name: String,
    pub version: String,
    pub any: Any,
}

/// A node's resources: type URL -> name -> resource.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    types: BTreeMap<String, BTreeMap<String, Resource>>,
}

/// A NACK a proxy sent, with its error text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    pub node: String,
    pub type_url: String,
    pub message: String,
}

/// Whether a node has accepted the current snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Every open stream of the node ACKed the last response of every type, after the
    /// latest change.
    Synced,
    /// Something is still in flight (or no stream is open).
    Pending(String),
    /// The proxy rejected the latest response of a type.
    Nacked(Nack),
}

/// Shared between the generators, the gRPC streams and the test.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    snapshots: HashMap<String, Arc<Snapshot>>,
    generation: u64,
    streams: HashMap<u64, StreamStatus>,
    nacks: Vec<Nack>,
}

#[derive(Debug, Default)]
struct StreamStatus {
    node: String,
    seen_generation: u64,
    types: HashMap<String, TypeStatus>,
}

#[derive(Debug, Default)]
struct TypeStatus {
    sent_nonce: String,
    acked: bool,
    nack: Option<String>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Adds (or replaces) a resource; its version is a hash of its encoding.
    pub fn insert(&mut self, name: String, any: Any) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        any.value.hash(&mut h);
        let version = format!("{:016x}", h.finish());
        self.types
            .entry(any.type_url.clone())
            .or_default()
            .insert(name.clone(), Resource { name, version, any });
    }

    /// Resources of one type whose names match (`wildcard`: all of them).
    pub fn select<'a>(
        &'a self,
        type_url: &str,
        wildcard: bool,
        names: &'a [String],
    ) -> impl Iterator<Item = &'a Resource> + 'a {
        self.types
            .get(type_url)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(move |r| wildcard || names.contains(&r.name))
    }
}

// === impl Store ===

impl Store {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the snapshots of several nodes at once and wakes every stream.
    pub fn set_all(&self, snapshots: impl IntoIterator<Item = (String, Snapshot)>) {
        let generation = {
            let mut inner = self.lock();
            for (node, snap) in snapshots {
                inner.snapshots.insert(node, Arc::new(snap));
            }
            inner.generation += 1;
            inner.generation
        };
        self.changed.send_replace(generation);
    }

    /// The node's snapshot and the generation it belongs to.
    pub fn snapshot(&self, node: &str) -> (Option<Arc<Snapshot>>, u64) {
        let inner = self.lock();
        (inner.snapshots.get(node).cloned(), inner.generation)
    }

    /// Wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn stream_opened(&self, id: u64, node: &str) {
        self.lock().streams.insert(
            id,
            StreamStatus {
                node: node.to_string(),
                ..StreamStatus::default()
            },
        );
    }

    pub(crate) fn stream_closed(&self, id: u64) {
        self.lock().streams.remove(&id);
    }

    /// The stream has pushed everything of `generation` that changed.
    pub(crate) fn seen(&self, id: u64, generation: u64) {
        if let Some(s) = self.lock().streams.get_mut(&id) {
            s.seen_generation = s.seen_generation.max(generation);
        }
    }

    pub(crate) fn sent(&self, id: u64, type_url: &str, nonce: &str) {
        if let Some(s) = self.lock().streams.get_mut(&id) {
            s.types.insert(
                type_url.to_string(),
                TypeStatus {
                    sent_nonce: nonce.to_string(),
                    acked: false,
                    nack: None,
                },
            );
        }
    }

    /// Records the proxy's answer to the response with `nonce`.
    pub(crate) fn answered(&self, id: u64, type_url: &str, nonce: &str, error: Option<String>) {
        let mut inner = self.lock();
        let Some(s) = inner.streams.get_mut(&id) else {
            return;
        };
        let node = s.node.clone();
        let Some(t) = s.types.get_mut(type_url) else {
            return;
        };
        if t.sent_nonce != nonce {
            return;
        }
        t.acked = error.is_none();
        t.nack.clone_from(&error);
        if let Some(message) = error {
            inner.nacks.push(Nack {
                node,
                type_url: type_url.to_string(),
                message,
            });
        }
    }

    /// Whether `node` has accepted everything up to the latest change. Without
    /// `require_stream`, a node with no open stream (a proxy that needs no secrets) counts
    /// as synced.
    pub fn sync_state(&self, node: &str, require_stream: bool) -> SyncState {
        let inner = self.lock();
        let streams: Vec<&StreamStatus> =
            inner.streams.values().filter(|s| s.node == node).collect();
        if streams.is_empty() && !require_stream {
            return SyncState::Synced;
        }
        if streams.is_empty() {
            return SyncState::Pending(format!("{node} has no open stream"));
        }
        for s in streams {
            if s.seen_generation < inner.generation {
                return SyncState::Pending(format!("{node}: latest change not pushed yet"));
            }
            for (type_url, t) in &s.types {
                if let Some(message) = &t.nack {
                    return SyncState::Nacked(Nack {
                        node: node.to_string(),
                        type_url: type_url.clone(),
                        message: message.clone(),
                    });
                }
                if !t.acked {
                    return SyncState::Pending(format!("{node}: {type_url} not acknowledged"));
                }
            }
        }
        SyncState::Synced
    }

    /// Every NACK received so far.
    pub fn nacks(&self) -> Vec<Nack> {
        self.lock().nacks.clone()
    }
}
