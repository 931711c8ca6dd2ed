//! The agent's memory budget for artifacts: one pool, derived from the container's memory
//! limit, that every reconcile's pulled layer, unpacked manifests and cached artifact draw
//! from. One tenant's artifact can take at most one share of it, so it can never push the
//! agent that serves every tenant past its limit; a reconcile that needs a share while others
//! hold the pool waits (and drops cached artifacts of other Sources, which are pulled again
//! later) instead of allocating.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The container memory limit assumed when none is given (the Deployment's limit).
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 * 1024 * 1024;
/// Part of the memory limit that artifacts may use, in percent; the rest is the runtime,
/// HTTP clients, the Source cache and kube's watch buffers (an idle agent uses ~20 MiB).
pub const ARTIFACT_PERCENT: u64 = 50;
/// Artifacts that may be pulled and unpacked at once at full size: one artifact's share is
/// the pool divided by this.
pub const SHARES: u64 = 2;
/// Parsed objects take several times the bytes of their YAML (maps, strings, the copies the
/// plan and the apply make); a manifest file is charged this many times its size.
pub const PARSED_FACTOR: u64 = 4;
/// Unit of the pool (the semaphore counts KiB so that a u32 covers any realistic limit).
const UNIT: u64 = 1024;
/// How often a reconcile waiting for memory looks again for cached artifacts to drop.
const RETRY: Duration = Duration::from_millis(500);

/// The pool.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    pool: Arc<Semaphore>,
    total: u64,
}

impl MemoryBudget {
    /// The budget for an agent whose container may use `memory_limit` bytes.
    pub fn for_limit(memory_limit: u64) -> MemoryBudget {
        let total = memory_limit.saturating_mul(ARTIFACT_PERCENT) / 100;
        let units = usize::try_from(total / UNIT)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        MemoryBudget {
            pool: Arc::new(Semaphore::new(units)),
            total,
        }
    }

    /// Bytes of the whole pool.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes one artifact may use: compressed layer plus [`PARSED_FACTOR`] × its manifests.
    pub fn share(&self) -> u64 {
        self.total / SHARES
    }

    /// Waits for one share. While the pool is held, `evict` is asked to drop one cached
    /// artifact (returning whether it did) before waiting again.
    pub async fn reserve(&self, mut evict: impl FnMut() -> bool) -> Grant {
        let units = self.units(self.share());
        loop {
            if let Ok(permit) = self.pool.clone().try_acquire_many_owned(units) {
                return Grant {
                    permit: Some(permit),
                };
            }
            if evict() {
                continue;
            }
            // Held by reconciles in flight (or by cached artifacts pinned by them): wait for
            // one to end, then look again.
            match tokio::time::timeout(RETRY, self.pool.clone().acquire_many_owned(units)).await {
                Ok(Ok(permit)) => {
                    return Grant {
                        permit: Some(permit),
                    };
                }
                Ok(Err(_)) => return Grant { permit: None }, // never closed
                Err(_) => {}
            }
        }
    }

    fn units(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
    }
}

/// A share of the pool, held while an artifact is in memory; returned when dropped.
#[derive(Debug)]
pub struct Grant {
    permit: Option<OwnedSemaphorePermit>,
}

impl Grant {
    /// Keeps only what `used` bytes need and returns the rest to the pool (an artifact that is
    /// cached after its apply holds just its own size).
    pub fn shrink_to(&mut self, used: u64) {
        let keep = usize::try_from(used.div_ceil(UNIT))
            .unwrap_or(usize::MAX)
            .max(1);
        if let Some(permit) = &mut self.permit
            && permit.num_permits() > keep
        {
            drop(permit.split(permit.num_permits() - keep));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests report failure by panicking
mod tests {
    use super::*;

    #[tokio::test]
    async fn shares_are_bounded_shrink_returns_memory_and_eviction_frees_the_pool() {
        let budget = MemoryBudget::for_limit(8 * 1024 * 1024);
        assert_eq!(budget.total(), 4 * 1024 * 1024);
        assert_eq!(budget.share(), 2 * 1024 * 1024);
        let mut a = budget.reserve(|| false).await;
        let _b = budget.reserve(|| false).await;
        // The pool is full: a third waits until an eviction frees memory.
        let mut cached = Some(budget.reserve(|| false));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), cached.take().unwrap())
                .await
                .is_err()
        );
        a.shrink_to(1024 * 1024);
        let mut evicted = Some(a);
        let c = tokio::time::timeout(
            Duration::from_secs(2),
            budget.reserve(|| evicted.take().is_some()),
        )
        .await;
        assert!(c.is_ok(), "an eviction did not free the pool");
    }
}
