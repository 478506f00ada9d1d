//! Where remote commands land. Telemetry parses and audits them and sends
//! each as a [`CommandRequest`]; this routes it to the one thing it may
//! change: a task's control (enabled, threshold), the running config (`reload`: the file
//! is read again and applied or refused whole, see [`super::reload`]), or a point the config marks
//! writable, through the same guarded, rate-limited path as every other
//! Modbus write. Commands are executed one at a time, in arrival order.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::modbus::points::Points;
use crate::modbus::Outputs;
use crate::part::control::TaskControl;
use crate::telemetry::commands::{Command, CommandRequest};

/// What commands can act on.
pub struct Router {
    pub points: Points,
    pub outputs: Outputs,
    pub tasks: BTreeMap<String, Arc<TaskControl>>,
    /// Applies the config file again (`reload`).
    pub reloader: super::reload::Reloader,
    /// Evidence capture, for `mark-part`.
    pub capture: Option<crate::capture::Capture>,
    /// Model installs, shadows, promotions and rollbacks; None without `rollout` in the config.
    pub rollouts: Option<super::rollout::Rollouts>,
}

impl Router {
    /// Answer requests until every sender (the MQTT doors) is gone.
    pub async fn run(self, mut requests: mpsc::Receiver<CommandRequest>) {
        while let Some(req) = requests.recv().await {
            let result = self.execute(&req.command, &req.source).await;
            let _ = req.reply.send(result);
        }
    }

    async fn execute(&self, cmd: &Command, source: &str) -> Result<(), String> {
        match cmd {
            Command::SetPoint { point, value } => {
                let p = self.points.get(point).ok_or_else(|| format!("no point `{point}` in the config"))?;
                if !p.config.writable {
                    return Err(format!("point `{point}` is not writable: the config does not mark it `writable`"));
                }
                let spec = &self.points.specs[point.as_str()];
                self.outputs.write_point(point, spec, value).await
            }
            Command::EnableTask { task } => self.task(task)?.set_enabled(true),
            Command::DisableTask { task } => self.task(task)?.set_enabled(false),
            Command::SetThreshold { task, threshold } => self.task(task)?.set_threshold(*threshold),
            Command::Reload => self.reloader.reload(source).await.map(|_| ()),
            Command::MarkPart { task, part_id, mark } => {
                let capture = self.capture.clone().ok_or_else(|| {
                    format!("task `{task}` has no evidence capture: no task has `capture` configured")
                })?;
                let mark = crate::capture::Mark::parse(mark)?;
                let (task, part_id, by) = (task.clone(), *part_id, source.to_string());
                // A sidecar is read and rewritten (fsynced): off the async threads.
                tokio::task::spawn_blocking(move || capture.mark(&task, part_id, mark, &by))
                    .await
                    .unwrap_or_else(|e| Err(format!("the mark was not written: {e}")))
            }
            Command::InstallModel { model, package } => self.rollouts()?.install(model, package, source).await,
            Command::ShadowModel { model, version } => self.rollouts()?.shadow(model, *version, source).await,
            Command::StopShadow { model } => self.rollouts()?.stop_shadow(model, source).await,
            Command::PromoteModel { model, version } => self.rollouts()?.promote(model, *version, source).await,
            Command::RollbackModel { model } => self.rollouts()?.rollback(model, source).await,
            // Answered by the Sparkplug session itself; never routed here.
            Command::Rebirth => Err("rebirth is the Sparkplug session's".into()),
        }
    }

    fn rollouts(&self) -> Result<&super::rollout::Rollouts, String> {
        self.rollouts.as_ref().ok_or_else(|| {
            "model rollout is off: the state directory cannot keep model slots (see the log at start)".to_string()
        })
    }

    fn task(&self, name: &str) -> Result<&TaskControl, String> {
        self.tasks.get(name).map(|c| &**c).ok_or_else(|| {
            let known: Vec<&str> = self.tasks.keys().map(String::as_str).collect();
            format!("no task `{name}`; tasks: {}", known.join(", "))
        })
    }
}
