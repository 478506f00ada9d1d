//! A finished part: its judgement, what the gate did with it, and the
//! figures that go with it. Decision makes one per part and hands it out on a
//! channel; telemetry turns it into the JSON result and Sparkplug metrics
//! (the payloads are documented in docs/mqtt.md).

use std::sync::Arc;

use crate::config::UncertainAction;

use super::Judgement;

/// One part, judged and (where a gate is configured) dealt with.
#[derive(Debug, Clone)]
pub struct PartResult {
    pub task: Arc<str>,
    pub judgement: Judgement,
    /// The model's class names, in its output order (`["anomaly"]` for anomaly models).
    pub classes: Arc<[String]>,
    /// `name@version` of the model that judged it.
    pub model: Arc<str>,
    /// From capture to the verdict.
    pub capture_to_decision_ms: f64,
    /// From capture to the device's acknowledgement of the reject pulse, when one fired.
    pub capture_to_reject_ack_ms: Option<f64>,
    /// UNCERTAIN parts: what the task does with them.
    pub uncertain_action: Option<UncertainAction>,
    /// Passed and marked for review (`uncertain.action: flag`).
    pub flagged: bool,
    /// What the reject gate did, for parts that concern it.
    pub reject: Option<RejectReport>,
}

/// What the reject gate did with a part.
#[derive(Debug, Clone, PartialEq)]
pub enum RejectReport {
    /// The part must be thrown out but the task has no gate.
    NotConfigured,
    /// Thrown out; `late_ms` after its arrival. `deadline_miss`: its verdict was not ready at
    /// the gate, and it was thrown out for that.
    Fired { output: String, late_ms: f64, deadline_miss: bool },
    /// Its verdict was not ready at the gate and the configured action is to let it pass.
    PassedUninspected { output: String },
    /// A good part that went by the gate before its verdict (reported once known).
    Passed { output: String },
    /// The reject could not be written (or the gate stopped first): the part may have passed.
    Failed { output: String, error: String },
}
