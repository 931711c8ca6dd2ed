//! What the running controller knows about itself and the probes and the receiver ask:
//! whether it has started, whether this replica leads, whether its Source cache is synced.
//! Runtime state, not telemetry: the `leader` gauge in [`crate::metrics`] only mirrors it.

use std::sync::atomic::{AtomicBool, Ordering};

/// Shared by the controller (the only writer), `/readyz` and the receiver.
#[derive(Debug, Default)]
pub struct RuntimeState {
    /// Sources listed and the controller started (or following, waiting for the Lease).
    started: AtomicBool,
    /// This replica holds the Lease, or runs without leader election.
    leader: AtomicBool,
    /// The leader's Source cache holds the initial list (kube-runtime store ready).
    synced: AtomicBool,
}

impl RuntimeState {
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Release);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
    }

    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}
