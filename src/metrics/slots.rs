//! The listener's connection slots: a fixed number, and when all are taken a new connection
//! takes the slot of the oldest one that has not sent its request yet, or, when every one is
//! being answered, of the oldest of them. Neither idle connections nor clients that ask and
//! never read their answer (which holds a slot until the deadline) can lock a health check out,
//! and the open connections stay bounded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Up to `max` open connections.
pub(super) struct Slots {
    max: usize,
    open: Mutex<VecDeque<Arc<Slot>>>,
}

/// One connection's place.
#[derive(Default)]
pub(super) struct Slot {
    /// Cancelled when a newer connection took this slot.
    pub(super) evicted: CancellationToken,
    /// Set once the connection's request has arrived: it is no longer evictable.
    answering: AtomicBool,
}

impl Slot {
    pub(super) fn start_answering(&self) {
        self.answering.store(true, Ordering::Relaxed);
    }
}

/// A taken slot; dropping it frees it.
pub(super) struct Taken {
    slots: Arc<Slots>,
    pub(super) slot: Arc<Slot>,
}

impl Drop for Taken {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.retain(|slot| !Arc::ptr_eq(slot, &self.slot));
    }
}

impl Slots {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Slots {
            max: max.max(1),
            open: Mutex::default(),
        })
    }

    /// A slot for a new connection. When all are taken, the oldest idle connection gives way,
    /// and as a last resort the oldest one being answered: a newcomer is always served, so a
    /// health check gets through however the other slots are held.
    pub(super) fn take(self: &Arc<Self>) -> Taken {
        let mut open = self.lock();
        if open.len() >= self.max {
            let idle = open
                .iter()
                .position(|slot| !slot.answering.load(Ordering::Relaxed));
            if let Some(oldest) = open.remove(idle.unwrap_or(0)) {
                oldest.evicted.cancel();
            }
        }
        let slot = Arc::new(Slot::default());
        open.push_back(slot.clone());
        Taken {
            slots: self.clone(),
            slot,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Slot>>> {
        // A list of slots: a panic elsewhere cannot leave it inconsistent.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_evicts_the_oldest_idle_one_when_full() {
        let slots = Slots::new(2);
        let first = slots.take();
        let second = slots.take();
        first.slot.start_answering();
        let third = slots.take();
        assert!(!first.slot.evicted.is_cancelled());
        assert!(second.slot.evicted.is_cancelled());
        assert!(!third.slot.evicted.is_cancelled());
        drop(second);
        assert_eq!(slots.lock().len(), 2);
    }

    #[test]
    fn while_every_connection_is_being_answered_the_oldest_gives_way_to_a_newcomer() {
        let slots = Slots::new(2);
        let first = slots.take();
        let second = slots.take();
        first.slot.start_answering();
        second.slot.start_answering();
        let third = slots.take();
        assert!(first.slot.evicted.is_cancelled());
        assert!(!second.slot.evicted.is_cancelled());
        assert!(!third.slot.evicted.is_cancelled());
        // The evicted connection ends later: its slot is not freed twice.
        drop(first);
        assert_eq!(slots.lock().len(), 2);
        third.slot.start_answering();
        let fourth = slots.take();
        assert!(second.slot.evicted.is_cancelled());
        assert!(!fourth.slot.evicted.is_cancelled());
        assert_eq!(slots.lock().len(), 2);
    }
}
