//! The result block: verdicts for PLCs that read results with a handshake
//! (the LandingEdge / Cognex style), rather than only seeing the reject pulse.
//!
//! Eight holding registers from the block's address (docs/modbus.md):
//!
//! | offset | meaning |
//! | --- | --- |
//! | 0 | result ready: linesight writes 1 with a new result; the PLC writes 0 to acknowledge |
//! | 1 | verdict: 1 OK, 2 NG, 3 ERROR (0: none yet) |
//! | 2, 3 | part id, u32, high word first |
//! | 4, 5 | inspection counter (results written so far), u32, high word first |
//! | 6 | overrun: 1 when results were lost before this one because the PLC had not acknowledged |
//! | 7 | results lost since start (saturates at 65535) |
//!
//! The whole block is written in one request (function 16), so the PLC never
//! sees half a result. A new result is written only after the previous one
//! was acknowledged; meanwhile up to `buffer` results wait, and beyond that
//! the oldest unread one is lost, counted and flagged.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep, Instant};

use super::RegisterHandle;
use crate::part::Verdict;
use crate::stats::HandshakeStats;

pub fn verdict_code(v: Verdict) -> u16 {
    match v {
        Verdict::Ok => 1,
        Verdict::Ng => 2,
        Verdict::Error => 3,
        Verdict::Uncertain => 4,
    }
}

/// The eight registers of one result.
pub fn encode(part_id: u64, verdict: Verdict, counter: u32, overrun: bool, lost: u64) -> Vec<u16> {
    let id = part_id as u32;
    vec![
        1,
        verdict_code(verdict),
        (id >> 16) as u16,
        id as u16,
        (counter >> 16) as u16,
        counter as u16,
        u16::from(overrun),
        lost.min(u64::from(u16::MAX)) as u16,
    ]
}

/// Run until `results` closes, then give the PLC up to `grace` to take the
/// results still waiting.
pub async fn run(
    block: RegisterHandle,
    ack_poll: Duration,
    buffer: usize,
    mut results: mpsc::Receiver<(u64, Verdict)>,
    stats: Arc<HandshakeStats>,
    grace: Duration,
) {
    // Start clean: "no result yet", so a PLC does not take a stale block from
    // a previous run for a new part.
    if let Err(e) = block.write(0, vec![0; 8]).await {
        tracing::warn!(block = %block.name, error = %e, "result block could not be cleared at start");
    }
    let mut queue: VecDeque<(u64, Verdict)> = VecDeque::new();
    let mut awaiting_ack = false;
    let mut counter: u32 = 0;
    let mut lost_since_last = 0u64;
    let mut open = true;
    let mut closing_since: Option<Instant> = None;
    loop {
        if !open {
            let since = *closing_since.get_or_insert_with(Instant::now);
            if queue.is_empty() && !awaiting_ack || since.elapsed() >= grace {
                if !queue.is_empty() {
                    stats.lost.fetch_add(queue.len() as u64, Ordering::Relaxed);
                    tracing::warn!(block = %block.name, results = queue.len(), "stopping with results the PLC has not taken");
                }
                return;
            }
        }
        if !awaiting_ack {
            if let Some(&(part, verdict)) = queue.front() {
                let total_lost = stats.lost.load(Ordering::Relaxed);
                let regs = encode(part, verdict, counter.wrapping_add(1), lost_since_last > 0, total_lost);
                match block.write(0, regs).await {
                    Ok(()) => {
                        queue.pop_front();
                        counter = counter.wrapping_add(1);
                        lost_since_last = 0;
                        awaiting_ack = true;
                        stats.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.write_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(block = %block.name, error = %e, "result block write failed; retrying");
                    }
                }
            }
        }
        let busy = awaiting_ack || !queue.is_empty();
        tokio::select! {
            r = results.recv(), if open => match r {
                Some(result) => {
                    queue.push_back(result);
                    if queue.len() > buffer {
                        let (part, _) = queue.pop_front().expect("longer than buffer");
                        lost_since_last += 1;
                        stats.lost.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(block = %block.name, part, "result lost: the PLC has not acknowledged the results before it (overrun)");
                    }
                }
                None => open = false,
            },
            _ = sleep(ack_poll), if busy || !open => {
                if awaiting_ack {
                    match block.read(0, 1).await {
                        Ok(v) if v.first() == Some(&0) => {
                            awaiting_ack = false;
                            stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(block = %block.name, error = %e, "result-ready register could not be read"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::outputs::testing::{recorded, Recorder};

    fn setup() -> (Recorder, RegisterHandle) {
        let (rec, outputs) = recorded(
            "  devices: { plc: { tcp: \"127.0.0.1:502\" } }\n  result_blocks: { cell: { device: plc, address: 200 } }",
        );
        (rec, outputs.result_block("cell").unwrap().clone())
    }

    fn ack(rec: &Recorder) {
        rec.registers.lock().unwrap().insert(200, 0);
    }

    fn blocks(rec: &Recorder) -> Vec<Vec<u16>> {
        rec.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, a, v)| *a == 200 && v[0] == 1)
            .map(|(_, _, v)| v.clone())
            .collect()
    }

    #[test]
    fn block_layout() {
        assert_eq!(encode(0x0001_0002, Verdict::Ng, 70_000, true, 3), vec![1, 2, 1, 2, 1, 4464, 1, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn next_result_waits_for_the_acknowledgement() {
        let (rec, block) = setup();
        let (tx, rx) = mpsc::channel(16);
        let stats = Arc::new(HandshakeStats::default());
        let task = tokio::spawn(run(block, Duration::from_millis(10), 4, rx, stats.clone(), Duration::from_secs(1)));
        tx.try_send((7, Verdict::Ok)).unwrap();
        tx.try_send((8, Verdict::Ng)).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Only the first is in the block: the PLC has not acknowledged it.
        assert_eq!(blocks(&rec), vec![encode(7, Verdict::Ok, 1, false, 0)]);
        ack(&rec);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(blocks(&rec), vec![encode(7, Verdict::Ok, 1, false, 0), encode(8, Verdict::Ng, 2, false, 0)]);
        ack(&rec);
        drop(tx);
        task.await.unwrap();
        assert_eq!(stats.acknowledged.load(Ordering::Relaxed), 2);
        assert_eq!(stats.lost.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unread_results_overflow_and_set_the_overrun_flag() {
        let (rec, block) = setup();
        let (tx, rx) = mpsc::channel(16);
        let stats = Arc::new(HandshakeStats::default());
        let task =
            tokio::spawn(run(block, Duration::from_millis(10), 2, rx, stats.clone(), Duration::from_millis(200)));
        for id in 1..=5 {
            tx.try_send((id, Verdict::Ok)).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // 1 is in the block; 2..5 wait in a buffer of 2: 2 and 3 are lost.
        assert_eq!(stats.lost.load(Ordering::Relaxed), 2);
        ack(&rec);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let b = blocks(&rec);
        assert_eq!(b.last().unwrap(), &encode(4, Verdict::Ok, 2, true, 2));
        ack(&rec);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(blocks(&rec).last().unwrap(), &encode(5, Verdict::Ok, 3, false, 2));
        drop(tx);
        task.await.unwrap();
    }
}
