//! Readings from the line: a point's latest value and how far it can be
//! trusted, and the conveyor's position. The Modbus poller writes them,
//! triggers, the encoder, the reject gate and telemetry read them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{PointConfig, PointType};

/// A decoded engineering value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl Value {
    /// The value as a number: integers and floats as they are, a bool as 0 or 1, text as `None`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            Value::Text(_) => None,
        }
    }

    /// The value as JSON. A float that JSON cannot carry (NaN, infinities) becomes `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::UInt(u) => serde_json::Value::from(*u),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::Text(s) => serde_json::Value::String(s.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
/// How far a point's value can be trusted.
pub enum Quality {
    /// Never read yet.
    Unknown,
    Good,
    Stale,
    Bad,
}

/// The latest reading of one point.
#[derive(Debug, Clone)]
pub struct Sample {
    pub value: Option<Value>,
    pub quality: Quality,
    /// When the value was last read successfully (monotonic): when the device most likely read it,
    /// midway through the request's round trip (the reply comes half a round trip later).
    pub read_at: Option<Instant>,
    /// The same, wall clock, for reports.
    pub read_wall: Option<SystemTime>,
    /// Why the last read failed, when it did.
    pub error: Option<String>,
    /// Successful reads so far: lets a consumer tell a new reading of an
    /// unchanged value from no reading at all.
    pub reads: u64,
}

impl Sample {
    /// Before the first read.
    pub fn unknown() -> Self {
        Sample { value: None, quality: Quality::Unknown, read_at: None, read_wall: None, error: None, reads: 0 }
    }

    /// Quality as of `now`: good turns stale when no read succeeded for three poll intervals.
    pub fn quality_at(&self, now: Instant, poll: Duration) -> Quality {
        match (self.quality, self.read_at) {
            (Quality::Good, Some(t)) if now.saturating_duration_since(t) > poll * 3 => Quality::Stale,
            (q, _) => q,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Some(Value::Bool(b)) => Some(b),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self.value {
            Some(Value::UInt(v)) => Some(v),
            Some(Value::Int(v)) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
}

/// Where the line is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    /// Counts since linesight started, never wrapping.
    pub counts: i64,
    /// When that position was read (as the device read it: see [`Sample::read_at`]).
    pub at: Instant,
    /// The counter's raw value at `counts` (the register as read), to place another value of the
    /// same counter (a latched count) on the unwrapped scale.
    pub raw: u64,
    /// Counts per second over the recent readings (0 when standing).
    pub speed: f64,
}

impl Position {
    /// The position expected at `t`, from the last reading and the speed.
    pub fn at_time(&self, t: Instant) -> f64 {
        let dt = if t >= self.at { (t - self.at).as_secs_f64() } else { -(self.at - t).as_secs_f64() };
        self.counts as f64 + self.speed * dt
    }

    /// When `target` will be reached at the current speed; None when the
    /// line stands or runs away from it.
    pub fn eta(&self, target: i64) -> Option<Instant> {
        let remaining = (target - self.counts) as f64;
        if remaining <= 0.0 {
            return Some(self.at);
        }
        if self.speed <= 1e-9 {
            return None;
        }
        let secs = remaining / self.speed;
        (secs < 3600.0).then(|| self.at + Duration::from_secs_f64(secs))
    }
}

/// Deadband: whether a new value should be published given the last published one.
///
/// Numbers (ints and floats, not bools) count as changed when they moved by more than `deadband`;
/// no deadband (or 0) means any change. NaN is unchanged from NaN and changed from any number. Other
/// values are compared for equality.
pub fn changed(last: Option<&Value>, new: &Value, deadband: Option<f64>) -> bool {
    let Some(last) = last else { return true };
    let (a, b) = match (numeric(last), numeric(new)) {
        (Some(a), Some(b)) => (a, b),
        _ => return last != new,
    };
    if a.is_nan() || b.is_nan() {
        return a.is_nan() != b.is_nan();
    }
    let db = deadband.filter(|d| *d > 0.0).unwrap_or(0.0);
    let diff = match (last, new) {
        // Exact for integers beyond 2^53, where going through f64 would hide small changes.
        (Value::Int(x), Value::Int(y)) => (i128::from(*y) - i128::from(*x)).unsigned_abs() as f64,
        (Value::UInt(x), Value::UInt(y)) => x.abs_diff(*y) as f64,
        _ if a == b => 0.0, // also equal infinities, whose difference is NaN
        _ => (b - a).abs(),
    };
    diff > db
}

fn numeric(v: &Value) -> Option<f64> {
    match v {
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => v.as_f64(),
        Value::Bool(_) | Value::Text(_) => None,
    }
}

/// One configured point as its readers see it: what it is, and a receiver
/// of its latest sample. The Modbus poller owns the sender.
#[derive(Clone)]
pub struct Point {
    pub name: Arc<str>,
    pub config: PointConfig,
    /// The value's type (from the config, defaults applied).
    pub ty: PointType,
    /// Whether a scale or offset turns the raw value into the engineering value.
    pub scaled: bool,
    pub rx: watch::Receiver<Sample>,
}

impl Point {
    /// The point as telemetry reports it.
    pub fn to_json(&self) -> serde_json::Value {
        let s = self.rx.borrow().clone();
        let q = s.quality_at(Instant::now(), self.config.poll.get());
        let mut doc = serde_json::json!({
            "value": s.value.as_ref().map(Value::to_json),
            "quality": q,
            "ts": s.read_wall.map(crate::util::time::rfc3339),
        });
        if let Some(u) = &self.config.unit {
            doc["unit"] = serde_json::json!(u);
        }
        if let Some(e) = &s.error {
            doc["error"] = serde_json::json!(e);
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadband() {
        let f = Value::Float;
        assert!(changed(None, &f(1.0), Some(10.0)));
        assert!(!changed(Some(&f(10.0)), &f(10.4), Some(0.5)));
        assert!(!changed(Some(&f(10.0)), &f(9.5), Some(0.5)));
        assert!(changed(Some(&f(10.0)), &f(10.6), Some(0.5)));
        assert!(changed(Some(&f(10.0)), &f(9.4), Some(0.5)));
        for db in [None, Some(0.0)] {
            assert!(changed(Some(&f(10.0)), &f(10.000001), db));
            assert!(!changed(Some(&f(10.0)), &f(10.0), db));
        }
        assert!(!changed(Some(&f(f64::NAN)), &f(f64::NAN), None));
        assert!(changed(Some(&f(f64::NAN)), &f(1.0), Some(5.0)));
        assert!(changed(Some(&f(1.0)), &f(f64::NAN), Some(5.0)));
        assert!(!changed(Some(&f(f64::INFINITY)), &f(f64::INFINITY), None));
        assert!(changed(Some(&f(f64::INFINITY)), &f(1e300), Some(1.0)));
        let big = 1i64 << 60;
        assert!(changed(Some(&Value::Int(big)), &Value::Int(big + 1), None));
        assert!(!changed(Some(&Value::Int(big)), &Value::Int(big + 1), Some(1.0)));
        assert!(changed(Some(&Value::UInt(u64::MAX - 1)), &Value::UInt(u64::MAX), None));
        assert!(changed(Some(&Value::UInt(3)), &Value::UInt(5), Some(1.5)));
        assert!(!changed(Some(&Value::Int(5)), &Value::Float(5.0), None));
        assert!(changed(Some(&Value::Bool(false)), &Value::Bool(true), Some(5.0)));
        assert!(!changed(Some(&Value::Bool(true)), &Value::Bool(true), None));
        assert!(changed(Some(&Value::Text("a".into())), &Value::Text("b".into()), Some(5.0)));
        assert!(!changed(Some(&Value::Text("a".into())), &Value::Text("a".into()), None));
        assert!(changed(Some(&Value::Text("1".into())), &Value::Int(1), None));
    }
}
