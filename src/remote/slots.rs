//! `--inflight`: a counting semaphore over the requests of a whole batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A counting semaphore: at most `capacity` holders at once. Clones share
/// the count.
#[derive(Debug, Clone)]
pub struct RequestSlots {
    capacity: usize,
    state: Arc<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    taken: Mutex<usize>,
    freed: Condvar,
    /// Most slots ever taken at once.
    peak: AtomicUsize,
}

/// One taken slot, given back when dropped.
pub struct RequestSlot<'a> {
    slots: &'a RequestSlots,
}

impl RequestSlots {
    /// `capacity` slots (at least one).
    pub fn new(capacity: usize) -> Self {
        RequestSlots {
            capacity: capacity.max(1),
            state: Arc::new(SlotState::default()),
        }
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Waits for a free slot and takes it.
    pub fn take(&self) -> RequestSlot<'_> {
        let mut taken = self.count();
        while *taken >= self.capacity {
            taken = self
                .state
                .freed
                .wait(taken)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *taken += 1;
        self.state.peak.fetch_max(*taken, Ordering::Relaxed);
        RequestSlot { slots: self }
    }

    /// Most slots taken at once so far (requests in flight together).
    pub fn peak(&self) -> usize {
        self.state.peak.load(Ordering::Relaxed)
    }

    fn count(&self) -> std::sync::MutexGuard<'_, usize> {
        self.state
            .taken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for RequestSlot<'_> {
    fn drop(&mut self) {
        *self.slots.count() -= 1;
        self.slots.state.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn request_slots_never_let_more_than_capacity_in_and_clones_share_them() {
        let slots = RequestSlots::new(3);
        let shared = slots.clone();
        let inside = AtomicUsize::new(0);
        let most_inside = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for worker in 0..8 {
                let slots = if worker % 2 == 0 { &slots } else { &shared };
                let (inside, most_inside) = (&inside, &most_inside);
                scope.spawn(move || {
                    for _ in 0..4 {
                        let _slot = slots.take();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most_inside.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(most_inside.load(Ordering::SeqCst) <= 3);
        assert!(slots.peak() <= 3 && slots.peak() >= 1);
        assert_eq!(*slots.count(), 0, "every slot given back");
        assert_eq!(RequestSlots::new(0).capacity(), 1);
    }
}
