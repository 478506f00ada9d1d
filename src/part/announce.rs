//! The way into a task's controller: every part's announcement (captured or triggered), its
//! inspection, or why it has none. Bounded, and nothing is ever dropped: a part that is not
//! announced would reach the gate unknown and pass it, so a full queue makes the sender wait
//! instead (the camera thread, the inference worker or the trigger), which holds the line's
//! capture back rather than letting memory grow. Each wait is counted; while one lasts the
//! task's busy mark is set, so a controller that stops taking events for longer than its stall
//! time stops the systemd watchdog and the PLC heartbeat (the node is hung, not idle).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::{self, error::TrySendError};

use super::PartEvent;
use crate::util::busy::Busy;

/// Events a controller may have waiting: seconds of a fast line (a part is two or three events),
/// far more than a controller that keeps up ever holds.
pub const EVENTS_BUFFER: usize = 4096;

/// A sender of one task's part events. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Announcer {
    tx: mpsc::Sender<PartEvent>,
    /// Sends that found the queue full and waited.
    waited: Arc<AtomicU64>,
    busy: Arc<Busy>,
}

impl Announcer {
    /// A task's controller queue of `capacity` events; `busy` is its liveness mark.
    pub fn channel(capacity: usize, busy: Arc<Busy>) -> (Announcer, mpsc::Receiver<PartEvent>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Announcer { tx, waited: Arc::default(), busy }, rx)
    }

    /// From a thread (a camera, an inference worker; never from the async runtime): waits while
    /// the queue is full. False when the controller is gone (the node is stopping).
    pub fn send_blocking(&self, event: PartEvent) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(event)) => {
                self.waited.fetch_add(1, Ordering::Relaxed);
                self.busy.begin();
                let sent = self.tx.blocking_send(event).is_ok();
                self.busy.end();
                sent
            }
        }
    }

    /// From an async task (a trigger): waits while the queue is full.
    pub async fn send(&self, event: PartEvent) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(event)) => {
                self.waited.fetch_add(1, Ordering::Relaxed);
                self.busy.begin();
                let sent = self.tx.send(event).await.is_ok();
                self.busy.end();
                sent
            }
        }
    }

    /// How many sends had to wait for room.
    pub fn waited(&self) -> u64 {
        self.waited.load(Ordering::Relaxed)
    }

    /// The counter behind [`Announcer::waited`], for the stats.
    pub fn waited_counter(&self) -> Arc<AtomicU64> {
        self.waited.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part::control::Stamp;
    use crate::part::PartInfo;
    use std::time::{Duration, Instant, SystemTime};

    fn event(id: u64) -> PartEvent {
        PartEvent::Captured(PartInfo {
            camera: "c".into(),
            part_id: id,
            captured: Instant::now(),
            position: None,
            captured_wall: SystemTime::now(),
            stamp: Stamp { generation: 0, threshold: 0.5 },
        })
    }

    #[test]
    fn a_full_queue_makes_the_sender_wait_marked_busy_and_loses_nothing() {
        let busy = Arc::new(Busy::default());
        let (tx, mut rx) = Announcer::channel(2, busy.clone());
        assert!(tx.send_blocking(event(1)) && tx.send_blocking(event(2)));
        let sender = {
            let tx = tx.clone();
            std::thread::spawn(move || tx.send_blocking(event(3)))
        };
        // The third waits, marked busy, until the controller takes one.
        let until = Instant::now() + Duration::from_secs(10);
        while busy.busy_for().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(busy.busy_for().is_some(), "a waiting sender marks the task busy");
        let ids: Vec<u64> = (0..3)
            .map(|_| match rx.blocking_recv() {
                Some(PartEvent::Captured(p)) => p.part_id,
                _ => panic!("an announcement"),
            })
            .collect();
        assert!(sender.join().unwrap());
        assert_eq!(ids, vec![1, 2, 3], "in order, none lost");
        assert_eq!(tx.waited(), 1);
        assert!(busy.busy_for().is_none());
        drop(rx);
        assert!(!tx.send_blocking(event(4)), "a gone controller is reported, not waited for");
    }
}
