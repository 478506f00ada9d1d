//! What may change in a running task: whether it inspects and its NG threshold (commands), and
//! every setting a config reload replaces ([`Versions`]).
//!
//! A part is stamped when it is announced (captured, or triggered) with the task's threshold and
//! the node's config generation ([`TaskControl::stamp`]); it is judged and timed by those, so a
//! change never applies to half a part: parts announced before a `set-threshold` or a reload are
//! judged by the old settings, parts announced after by the new.
//!
//! A disabled task does not pass parts: every part it sees gets ERROR ("task
//! disabled"), which the reject gate throws out. Disabling inspection is a
//! way to stop trusting a model, never a way to wave parts through.
//!
//! The setters are the only way to change either, and they hold the task's
//! [`CommandLimits`]: a threshold outside them, or a disable the config does
//! not allow, is refused here, whichever door (JSON or Sparkplug) the command
//! came through.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::{TaskCommandsConfig, DEFAULT_THRESHOLD_CEILING, DEFAULT_THRESHOLD_FLOOR, DEFAULT_THRESHOLD_SPAN};

/// What commands may do to one task: the thresholds they may set, and whether they may disable it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandLimits {
    /// The lowest and highest NG threshold a command may set (inclusive).
    pub threshold: (f64, f64),
    /// The task's `commands.threshold` gave them; otherwise they are the default around `base`.
    pub configured: bool,
    /// The task's NG threshold at start (configured, or the model's own), that the default is around.
    pub base: f64,
    pub allow_disable: bool,
}

/// Thresholds are shown and compared at 4 decimals (as the stats report them).
fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

impl CommandLimits {
    /// The limits of a task from its `commands` section and its effective NG threshold (the
    /// configured `rules.ng_threshold`, or the model's own: only known once the model is loaded).
    pub fn for_task(cfg: &TaskCommandsConfig, threshold: f32) -> CommandLimits {
        let base = round4(f64::from(threshold));
        let (threshold, configured) = match cfg.threshold {
            Some([low, high]) => ((low, high), true),
            None => (
                (
                    round4((base - DEFAULT_THRESHOLD_SPAN).max(DEFAULT_THRESHOLD_FLOOR)),
                    round4((base + DEFAULT_THRESHOLD_SPAN).min(DEFAULT_THRESHOLD_CEILING)),
                ),
                false,
            ),
        };
        CommandLimits { threshold, configured, base, allow_disable: cfg.allow_disable }
    }
}

#[derive(Debug)]
pub struct TaskControl {
    /// The task's name, for refusals that say which setting to change.
    task: String,
    enabled: AtomicBool,
    /// Threshold, limits and generation change together (a reload replaces all three), so they
    /// share one lock; it is read once per part, by the thread that announces it.
    current: RwLock<Current>,
}

#[derive(Debug, Clone)]
struct Current {
    generation: u64,
    threshold: f32,
    limits: CommandLimits,
}

/// What a part is judged by, fixed when it is announced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp {
    /// The node's config generation (0 at start, one more per applied reload).
    pub generation: u64,
    /// The task's NG threshold.
    pub threshold: f32,
}

impl TaskControl {
    pub fn new(task: &str, threshold: f32, limits: CommandLimits) -> Self {
        TaskControl {
            task: task.to_string(),
            enabled: AtomicBool::new(true),
            current: RwLock::new(Current { generation: 0, threshold, limits }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        // Nothing panics while holding it; a poisoned lock still holds consistent values.
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Current> {
        self.current.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn limits(&self) -> CommandLimits {
        self.read().limits.clone()
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Enabling is always allowed (it is the safe direction); disabling only when the config says
    /// `commands.allow_disable: true`.
    pub fn set_enabled(&self, on: bool) -> Result<(), String> {
        if !on && !self.read().limits.allow_disable {
            let t = &self.task;
            return Err(format!(
                "disable-task refused: task `{t}` may not be disabled by a command (`tasks.{t}.commands.allow_disable` is false, the default; a disabled task rejects every part); to allow it, set `tasks.{t}.commands.allow_disable: true` in the config"
            ));
        }
        self.enabled.store(on, Ordering::Relaxed);
        Ok(())
    }

    pub fn threshold(&self) -> f32 {
        self.read().threshold
    }

    /// The settings a part announced now is judged by.
    pub fn stamp(&self) -> Stamp {
        let c = self.read();
        Stamp { generation: c.generation, threshold: c.threshold }
    }

    /// A threshold is a probability: (0, 1]; zero would reject every part silently, one would
    /// pass every defect. Inside that, it must lie within the task's command limits.
    pub fn set_threshold(&self, t: f64) -> Result<(), String> {
        if !(t.is_finite() && t > 0.0 && t <= 1.0) {
            return Err(format!("threshold {t} is out of range: use a probability above 0 and at most 1"));
        }
        let mut c = self.write();
        let (low, high) = c.limits.threshold;
        if t < low || t > high {
            let name = &self.task;
            let why = if c.limits.configured {
                format!("`tasks.{name}.commands.threshold`")
            } else {
                format!(
                    "the default: its NG threshold {} ± {DEFAULT_THRESHOLD_SPAN}, never below {DEFAULT_THRESHOLD_FLOOR} or above {DEFAULT_THRESHOLD_CEILING}",
                    c.limits.base
                )
            };
            return Err(format!(
                "threshold {t} refused: task `{name}` takes {low} to {high} by command ({why}); to change the limits, set `tasks.{name}.commands.threshold: [low, high]` in the config"
            ));
        }
        c.threshold = t as f32;
        Ok(())
    }

    /// A reload: from now on parts carry `generation`, and, when the config's threshold changed,
    /// the new one (which replaces a threshold set by command; otherwise that one stays). The
    /// settings of `generation` must be in place (pushed to every [`Versions`]) before this.
    pub fn switch(&self, generation: u64, threshold: Option<f32>, limits: CommandLimits) {
        let mut c = self.write();
        c.generation = generation;
        if let Some(t) = threshold {
            c.threshold = t;
        }
        c.limits = limits;
    }
}

/// How many generations of settings are kept. A part waits at most its inference timeout, so
/// only reloads in quick succession reach back this far; a part older than every kept
/// generation is judged ERROR (rejected), never by settings it was not announced under.
pub const KEPT_GENERATIONS: usize = 8;

/// Settings a reload replaces, each with the generation it applies from: a part is judged by the
/// settings of its own generation ([`Stamp::generation`]). Written by the reload (before the
/// switch), read per part.
#[derive(Debug)]
pub struct Versions<T> {
    list: RwLock<VecDeque<(u64, Arc<T>)>>,
}

impl<T> Versions<T> {
    /// The settings of generation 0 (the start).
    pub fn new(first: T) -> Self {
        Versions { list: RwLock::new(VecDeque::from([(0, Arc::new(first))])) }
    }

    /// The settings parts of `generation` are judged by; `None` when they were dropped (see
    /// [`KEPT_GENERATIONS`]).
    pub fn at(&self, generation: u64) -> Option<Arc<T>> {
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        list.iter().rev().find(|(from, _)| *from <= generation).map(|(_, v)| v.clone())
    }

    /// The newest settings.
    pub fn latest(&self) -> Arc<T> {
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        list.back().map(|(_, v)| v.clone()).expect("never empty")
    }

    /// Settings for parts from `generation` on.
    pub fn push(&self, generation: u64, settings: T) {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        list.push_back((generation, Arc::new(settings)));
        while list.len() > KEPT_GENERATIONS {
            list.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(threshold: Option<[f64; 2]>, allow_disable: bool, base: f32) -> CommandLimits {
        CommandLimits::for_task(&TaskCommandsConfig { threshold, allow_disable }, base)
    }

    #[test]
    fn threshold_is_a_probability() {
        let c = TaskControl::new("t", 0.5, limits(Some([0.05, 0.95]), false, 0.5));
        assert!(c.set_threshold(0.7).is_ok());
        assert!((c.threshold() - 0.7).abs() < 1e-6);
        for bad in [0.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(c.set_threshold(bad).unwrap_err().contains("out of range"), "{bad}");
        }
        assert!((c.threshold() - 0.7).abs() < 1e-6, "a refused value changes nothing");
    }

    #[test]
    fn default_limits_are_the_threshold_plus_minus_a_fifth_inside_the_bounds() {
        assert_eq!(limits(None, false, 0.5).threshold, (0.3, 0.7));
        assert_eq!(limits(None, false, 0.25).threshold, (0.05, 0.45));
        assert_eq!(limits(None, false, 0.1).threshold, (0.05, 0.3));
        assert_eq!(limits(None, false, 0.9).threshold, (0.7, 0.95));
        assert_eq!(limits(None, false, 1.0).threshold, (0.8, 0.95));
        // An f32 threshold is compared at 4 decimals: 0.35f32 is 0.3499999940395355.
        assert_eq!(limits(None, false, 0.35).threshold, (0.15, 0.55));
        assert!(!limits(None, false, 0.5).configured);
        assert_eq!(limits(Some([0.3, 0.9]), true, 0.5).threshold, (0.3, 0.9));
    }

    #[test]
    fn a_threshold_of_one_is_refused_by_default_and_names_the_limit() {
        let c = TaskControl::new("inspect", 0.5, limits(None, false, 0.5));
        let e = c.set_threshold(1.0).unwrap_err();
        assert_eq!(
            e,
            "threshold 1 refused: task `inspect` takes 0.3 to 0.7 by command (the default: its NG threshold 0.5 ± 0.2, \
             never below 0.05 or above 0.95); to change the limits, set `tasks.inspect.commands.threshold: [low, high]` \
             in the config"
        );
        assert!(c.set_threshold(0.71).is_err());
        assert!(c.set_threshold(0.29).is_err());
        assert!(c.set_threshold(0.7).is_ok(), "the limits are inclusive");
        assert!(c.set_threshold(0.3).is_ok());
        assert!((c.threshold() - 0.3).abs() < 1e-6);
    }

    #[test]
    fn configured_limits_are_enforced_and_named() {
        let c = TaskControl::new("inspect", 0.5, limits(Some([0.4, 0.6]), false, 0.5));
        assert!(c.set_threshold(0.6).is_ok());
        let e = c.set_threshold(0.65).unwrap_err();
        assert!(e.contains("takes 0.4 to 0.6 by command (`tasks.inspect.commands.threshold`)"), "{e}");
        assert!((c.threshold() - 0.6).abs() < 1e-6, "a refused value changes nothing");
    }

    #[test]
    fn disabling_needs_the_config_enabling_never_does() {
        let c = TaskControl::new("inspect", 0.5, limits(None, false, 0.5));
        let e = c.set_enabled(false).unwrap_err();
        assert!(e.contains("`tasks.inspect.commands.allow_disable: true`"), "{e}");
        assert!(c.enabled(), "a refused disable changes nothing");
        assert!(c.set_enabled(true).is_ok());
        let c = TaskControl::new("inspect", 0.5, limits(None, true, 0.5));
        assert!(c.set_enabled(false).is_ok());
        assert!(!c.enabled());
        assert!(c.set_enabled(true).is_ok());
        assert!(c.enabled());
    }

    #[test]
    fn a_switch_stamps_later_parts_and_replaces_the_limits() {
        let c = TaskControl::new("inspect", 0.5, limits(None, false, 0.5));
        assert!(c.set_threshold(0.6).is_ok());
        assert_eq!(c.stamp(), Stamp { generation: 0, threshold: 0.6 });
        // A reload that does not change the threshold keeps the commanded one.
        c.switch(1, None, limits(None, false, 0.5));
        assert_eq!(c.stamp(), Stamp { generation: 1, threshold: 0.6 });
        c.switch(2, Some(0.8), limits(None, false, 0.8));
        assert_eq!(c.stamp(), Stamp { generation: 2, threshold: 0.8 });
        assert!(c.set_threshold(0.95).is_ok(), "the new limits are 0.6..0.95");
        assert!(c.set_threshold(0.5).is_err());
    }

    #[test]
    fn versions_answer_by_generation_and_forget_the_oldest() {
        let v = Versions::new("start");
        v.push(3, "third");
        assert_eq!(*v.at(0).unwrap(), "start");
        assert_eq!(*v.at(2).unwrap(), "start");
        assert_eq!(*v.at(3).unwrap(), "third");
        assert_eq!(*v.at(9).unwrap(), "third");
        for g in 10..10 + KEPT_GENERATIONS as u64 {
            v.push(g, "later");
        }
        assert!(v.at(2).is_none(), "a part older than every kept generation has no settings");
        assert_eq!(*v.latest(), "later");
    }
}
