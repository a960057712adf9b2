//! How many actions run on this machine at once (`-j`), independently of how many targets
//! the walk has in flight: with a remote cache, most targets spend their time waiting on the
//! network, so the walk runs more of them than there are cores, and only the ones that must
//! run here queue for a slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A counting semaphore that can be closed: once closed (a failure without `--keep-going`)
/// or cancelled, nothing waiting gets a slot.
pub(crate) struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
    closed: AtomicBool,
}

/// A held slot, given back when dropped.
pub(crate) struct Slot<'a>(&'a Slots);

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Waits for a free slot; `None` when the slots were closed or `cancel` was set first.
    pub fn acquire(&self, cancel: Option<&AtomicBool>) -> Option<Slot<'_>> {
        let stopped = || {
            self.closed.load(Ordering::SeqCst) || cancel.is_some_and(|c| c.load(Ordering::SeqCst))
        };
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if stopped() {
                return None;
            }
            if *free > 0 {
                *free -= 1;
                return Some(Slot(self));
            }
            // Cancellation sets a flag without notifying: look at it now and then.
            free = self
                .freed
                .wait_timeout(free, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// No waiting action starts any more (running ones finish).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.freed.notify_all();
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn no_more_than_n_hold_a_slot_at_once() {
        let slots = Slots::new(2);
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let _slot = slots.acquire(None).expect("open");
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    now.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn closing_or_cancelling_turns_waiters_away() {
        let slots = Slots::new(1);
        let held = slots.acquire(None).expect("open");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| slots.acquire(None).is_some());
            std::thread::sleep(Duration::from_millis(20));
            slots.close();
            assert!(!waiter.join().unwrap(), "a closed gate gives no slot");
        });
        drop(held);
        let cancel = AtomicBool::new(true);
        assert!(Slots::new(1).acquire(Some(&cancel)).is_none());
    }
}
