//! The bounded queue between a camera and its inference worker.
//!
//! Both ends are OS threads (OpenCV capture and ONNX Runtime calls block), so
//! this is a `Mutex` + `Condvar` queue rather than a tokio channel. What
//! happens when it is full is the camera's business and is chosen per push:
//! a file waits, a free-running stream drops its oldest frame, a frame that
//! stands for a part is handed back so the part can be failed safely.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Rung on every push into any of the queues that share it, so that one
/// inference worker serving several cameras can sleep until any of them has
/// a frame, instead of polling each queue in turn.
#[derive(Debug, Default)]
pub struct Doorbell {
    rings: Mutex<u64>,
    rang: Condvar,
}

impl Doorbell {
    /// How often it has rung so far; pass it to [`Doorbell::wait`].
    pub fn count(&self) -> u64 {
        *self.rings.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ring(&self) {
        *self.rings.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.rang.notify_all();
    }

    /// Wait until it rings after `seen` was read, or the timeout passes.
    pub fn wait(&self, seen: u64, timeout: Duration) {
        let guard = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.rang.wait_timeout_while(guard, timeout, |n| *n == seen);
    }
}

/// What to do when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room: nothing is moving (a file read as fast as inspection goes).
    Wait,
    /// Drop the oldest waiting item and return it, so it can be counted.
    DropOldest,
    /// Refuse the new item and return it: its part must get a verdict of ERROR.
    Refuse,
}

/// Result of a push.
#[derive(Debug)]
pub enum Pushed<T> {
    Queued,
    /// `DropOldest`: this older item made room and was not inspected.
    Displaced(T),
    /// `Refuse`: the queue was full and the new item was not queued.
    Refused(T),
    /// The queue is closed: the consumer is gone.
    Closed(T),
}

pub struct FrameQueue<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    capacity: usize,
    /// Rung after every push and at close, when a shared worker serves this queue.
    bell: Option<Arc<Doorbell>>,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> FrameQueue<T> {
    pub fn new(capacity: usize) -> Self {
        FrameQueue {
            state: Mutex::new(State { items: VecDeque::with_capacity(capacity), closed: false }),
            changed: Condvar::new(),
            capacity: capacity.max(1),
            bell: None,
        }
    }

    /// A queue that rings `bell` whenever an item arrives or it closes.
    pub fn with_doorbell(capacity: usize, bell: Arc<Doorbell>) -> Self {
        FrameQueue { bell: Some(bell), ..Self::new(capacity) }
    }

    fn ring(&self) {
        if let Some(b) = &self.bell {
            b.ring();
        }
    }

    /// Take the oldest item without waiting.
    pub fn try_pop(&self) -> Result<Option<T>, Closed> {
        self.pop(Duration::ZERO)
    }

    pub fn push(&self, item: T, when_full: WhenFull) -> Pushed<T> {
        let mut st = self.lock();
        loop {
            if st.closed {
                return Pushed::Closed(item);
            }
            if st.items.len() < self.capacity {
                st.items.push_back(item);
                drop(st);
                self.changed.notify_all();
                self.ring();
                return Pushed::Queued;
            }
            match when_full {
                WhenFull::Wait => {
                    st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                WhenFull::DropOldest => {
                    let old = st.items.pop_front().expect("full queue has a front");
                    st.items.push_back(item);
                    drop(st);
                    self.changed.notify_all();
                    self.ring();
                    return Pushed::Displaced(old);
                }
                WhenFull::Refuse => return Pushed::Refused(item),
            }
        }
    }

    /// Block until there is room (or the queue is closed). With a single
    /// producer, the next push then does not wait.
    pub fn wait_for_room(&self) {
        let mut st = self.lock();
        while !st.closed && st.items.len() >= self.capacity {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Take the oldest item, waiting up to `timeout`. `Err(())` once the queue
    /// is closed and empty: the producer is done.
    pub fn pop(&self, timeout: Duration) -> Result<Option<T>, Closed> {
        let mut st = self.lock();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(item) = st.items.pop_front() {
                drop(st);
                self.changed.notify_all();
                return Ok(Some(item));
            }
            if st.closed {
                return Err(Closed);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// No more pushes; waiting items can still be taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
        self.ring();
    }

    /// Close and hand back whatever was waiting (for shutdown without draining).
    pub fn close_and_drain(&self) -> Vec<T> {
        let mut st = self.lock();
        st.closed = true;
        let left = st.items.drain(..).collect();
        drop(st);
        self.changed.notify_all();
        left
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the deque inconsistent,
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn drop_oldest_hands_back_the_displaced_item() {
        let q = FrameQueue::new(2);
        assert!(matches!(q.push(1, WhenFull::DropOldest), Pushed::Queued));
        assert!(matches!(q.push(2, WhenFull::DropOldest), Pushed::Queued));
        assert!(matches!(q.push(3, WhenFull::DropOldest), Pushed::Displaced(1)));
        assert_eq!(q.pop(Duration::ZERO), Ok(Some(2)));
        assert_eq!(q.pop(Duration::ZERO), Ok(Some(3)));
        assert_eq!(q.pop(Duration::ZERO), Ok(None));
    }

    #[test]
    fn refuse_keeps_the_queue_and_returns_the_new_item() {
        let q = FrameQueue::new(1);
        assert!(matches!(q.push(1, WhenFull::Refuse), Pushed::Queued));
        assert!(matches!(q.push(2, WhenFull::Refuse), Pushed::Refused(2)));
        assert_eq!(q.pop(Duration::ZERO), Ok(Some(1)));
    }

    #[test]
    fn wait_blocks_until_the_consumer_makes_room() {
        let q = Arc::new(FrameQueue::new(1));
        q.push(1, WhenFull::Wait);
        let q2 = q.clone();
        let producer = std::thread::spawn(move || matches!(q2.push(2, WhenFull::Wait), Pushed::Queued));
        assert_eq!(q.pop(Duration::from_secs(5)), Ok(Some(1)));
        assert!(producer.join().unwrap());
        assert_eq!(q.pop(Duration::from_secs(5)), Ok(Some(2)));
    }

    #[test]
    fn close_lets_the_consumer_drain_then_ends() {
        let q = FrameQueue::new(4);
        q.push(7, WhenFull::Wait);
        q.close();
        assert!(matches!(q.push(8, WhenFull::Wait), Pushed::Closed(8)));
        assert_eq!(q.pop(Duration::ZERO), Ok(Some(7)));
        assert_eq!(q.pop(Duration::ZERO), Err(Closed));
    }
}
