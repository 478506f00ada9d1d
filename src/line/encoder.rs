//! The conveyor's encoder: a wrapping hardware counter turned into an
//! unwrapped position and a speed.
//!
//! The PLC exposes the encoder as a u16 or u32 register that wraps. Each
//! reading is turned into a signed step (the shortest way round the wrap, so
//! a line that runs backwards a little is followed too) and added to an i64
//! position that never wraps. Speed is a least-squares line through the last
//! ~100 ms of readings, and the latest position is placed in time on that
//! line (a reading's own time is uncertain by half its round trip); the reject
//! gate uses both to predict when a part reaches the gate between two
//! readings.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::PointType;
use crate::part::sample::{Position, Quality, Sample};

/// Unwraps successive raw counter values.
#[derive(Debug)]
pub struct Unwrapper {
    bits: u32,
    last_raw: Option<u64>,
    counts: i64,
    history: VecDeque<(Instant, i64)>,
}

/// Speed is measured over this much history.
const SPEED_WINDOW: Duration = Duration::from_millis(100);
/// The most the fitted line may move a reading's time (see [`Unwrapper::fit`]).
const MAX_SHIFT: Duration = Duration::from_millis(5);

impl Unwrapper {
    pub fn new(ty: PointType) -> Self {
        let bits = if ty == PointType::U16 { 16 } else { 32 };
        Unwrapper { bits, last_raw: None, counts: 0, history: VecDeque::new() }
    }

    /// Take one reading; returns the new position.
    pub fn update(&mut self, raw: u64, at: Instant) -> Position {
        let modulus = 1i64 << self.bits;
        let raw = (raw as i64) & (modulus - 1);
        if let Some(last) = self.last_raw {
            let mut step = (raw - last as i64).rem_euclid(modulus);
            if step >= modulus / 2 {
                step -= modulus; // backwards, the short way round
            }
            self.counts += step;
        }
        self.last_raw = Some(raw as u64);
        self.history.push_back((at, self.counts));
        while self.history.len() > 2 && at.saturating_duration_since(self.history[1].0) >= SPEED_WINDOW {
            self.history.pop_front();
        }
        let (speed, at) = self.fit(at);
        Position { counts: self.counts, at, speed, raw: raw as u64 }
    }

    /// Speed and time of the latest position from a least-squares line through the readings of
    /// the window before the latest. Each reading's time is uncertain by half its round trip (a
    /// slow answer from a busy PLC is placed midway, which may be off by a few ms); the line through
    /// fifty readings is not. The latest count is then placed at the time the line gives it (when
    /// that is within `MAX_SHIFT` of its own time: a line that changes speed is followed by its
    /// readings).
    fn fit(&self, at: Instant) -> (f64, Instant) {
        // Through the readings before the latest: the latest is placed on it, not pulling it.
        let mut n = self.history.len();
        if n >= 4 {
            n -= 1;
        }
        let Some(&(t0, _)) = self.history.front() else { return (0.0, at) };
        if n < 2 {
            return (0.0, at);
        }
        let points = || self.history.iter().take(n);
        let secs = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
        let (mt, mc) = points().fold((0.0, 0.0), |(a, b), &(t, c)| (a + secs(t), b + c as f64));
        let (mt, mc) = (mt / n as f64, mc / n as f64);
        let (mut stt, mut stc) = (0.0, 0.0);
        for &(t, c) in points() {
            let dt = secs(t) - mt;
            stt += dt * dt;
            stc += dt * (c as f64 - mc);
        }
        if stt <= 0.0 {
            return (0.0, at);
        }
        let speed = stc / stt;
        if n < 3 || speed.abs() < 1e-6 || n == self.history.len() {
            return (speed, at);
        }
        // The fitted time of the latest count, relative to t0.
        let fitted = mt + (self.counts as f64 - mc) / speed;
        let own = secs(at);
        if (fitted - own).abs() > MAX_SHIFT.as_secs_f64() || fitted < 0.0 {
            return (speed, at);
        }
        (speed, t0 + Duration::from_secs_f64(fitted))
    }
}

/// Follow the encoder point and publish positions until its sender is gone.
/// Only good readings move the position; a bad one leaves it where it was.
pub async fn follow(mut point: watch::Receiver<Sample>, ty: PointType, out: watch::Sender<Option<Position>>) {
    let mut unwrapper = Unwrapper::new(ty);
    let mut last_reads = 0;
    loop {
        {
            let s = point.borrow_and_update();
            if s.quality == Quality::Good && s.reads != last_reads {
                last_reads = s.reads;
                if let (Some(raw), Some(at)) = (s.as_u64(), s.read_at) {
                    let _ = out.send(Some(unwrapper.update(raw, at)));
                }
            }
        }
        if point.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u16_counter_wraps_forward_and_backward() {
        let t0 = Instant::now();
        let mut u = Unwrapper::new(PointType::U16);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(u.update(65_530, ms(0)).counts, 0);
        assert_eq!(u.update(4, ms(10)).counts, 10); // through the wrap
        assert_eq!(u.update(65_534, ms(20)).counts, 4); // 6 back through the wrap
        let mut u32c = Unwrapper::new(PointType::U32);
        u32c.update(u64::from(u32::MAX) - 99, ms(0));
        assert_eq!(u32c.update(100, ms(10)).counts, 200);
    }

    #[test]
    fn speed_and_arrival_time() {
        let t0 = Instant::now();
        let mut u = Unwrapper::new(PointType::U32);
        let mut p = u.update(1000, t0);
        for i in 1..=10u64 {
            // 20 counts every 2 ms: 10,000 counts/s.
            p = u.update(1000 + 20 * i, t0 + Duration::from_millis(2 * i));
        }
        assert!((p.speed - 10_000.0).abs() < 1e-6, "{}", p.speed);
        assert_eq!(p.counts, 200);
        // 1,000 counts ahead at 10,000 counts/s: 100 ms after the reading.
        assert_eq!(p.eta(1200), Some(p.at + Duration::from_millis(100)));
        assert_eq!(p.eta(100), Some(p.at), "already passed");
        let standing = Position { speed: 0.0, ..p };
        assert_eq!(standing.eta(1200), None);
        assert!((p.at_time(p.at + Duration::from_millis(5)) - 250.0).abs() < 1e-6);
    }

    #[test]
    fn a_reading_timed_wrong_is_placed_on_the_line() {
        let t0 = Instant::now();
        let mut u = Unwrapper::new(PointType::U32);
        for i in 0..=20u64 {
            u.update(20 * i, t0 + Duration::from_millis(2 * i));
        }
        // The next reading's reply was slow: its midpoint says 44.0 ms, the count says 42 ms.
        let p = u.update(20 * 21, t0 + Duration::from_millis(44));
        assert_eq!(p.counts, 420);
        let off = p.at.saturating_duration_since(t0 + Duration::from_millis(42));
        assert!(off < Duration::from_micros(200), "placed {off:?} after the line's time");
        assert!((p.speed - 10_000.0).abs() < 500.0, "{}", p.speed);
    }
}
