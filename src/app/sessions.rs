//! The MQTT sessions (plain JSON, Sparkplug B, or both) and what publishes
//! through them: camera status, point values, the command doors.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::StartError;
use crate::config::{Config, QueueConfig};
use crate::part::sample::Point;
use crate::stats::{CameraStats, NodeStats, QueueStats};
use crate::telemetry::commands::{self, Commander};
use crate::telemetry::durable::{AckBy, Durable};
use crate::telemetry::guard::Guard;
use crate::telemetry::mqtt::{Incoming, Mqtt, Topics};
use crate::telemetry::sparkplug::{self, Pending, Sparkplug};
use crate::telemetry::Telemetry;

/// The sessions, connected (JSON) or ready to start (Sparkplug, which needs the node's figures).
pub struct Sessions {
    pub mqtt: Option<(Mqtt, JoinHandle<()>)>,
    /// Messages on the JSON session's subscriptions (its command topic).
    incoming: Option<mpsc::Receiver<Incoming>>,
    pub sparkplug: Option<Sparkplug>,
    sparkplug_pending: Option<Pending>,
    /// The Sparkplug session's disk queue figures (its queue starts with the session, later;
    /// the supervisor watches them from the start).
    sparkplug_queue: Option<Arc<QueueStats>>,
    /// Where results and alarms go: either dialect, or both.
    pub telemetry: Telemetry,
}

impl Sessions {
    /// Start the JSON session (with its disk queue) and the Sparkplug handle, as configured.
    pub fn open(config: &Config) -> Result<Sessions, StartError> {
        let (mqtt, incoming) = match &config.mqtt {
            Some(m) if m.dialect.json() => {
                let commands = Topics::new(&m.prefix, &config.node).commands();
                // A queue folder that cannot be opened does not stop the start: the queue's
                // writer keeps trying it, and the session sends live meanwhile (an alarm says so).
                let durable = match &m.queue {
                    Some(q) => {
                        Some(Durable::open(q, AckBy::PubAck, "MQTT queue", Arc::default()).map_err(StartError::Other)?)
                    }
                    None => None,
                };
                let (client, task, incoming) =
                    Mqtt::start(m, &config.node, vec![commands], durable).map_err(StartError::Other)?;
                (Some((client, task)), Some(incoming))
            }
            _ => (None, None),
        };
        let (sparkplug, sparkplug_pending) = match &config.mqtt {
            Some(m) if m.dialect.sparkplug() => {
                let (handle, pending) = Sparkplug::channel();
                (Some(handle), Some(pending))
            }
            _ => (None, None),
        };
        let sparkplug_queue = match &config.mqtt {
            Some(m) if m.dialect.sparkplug() && m.queue.is_some() => Some(Arc::default()),
            _ => None,
        };
        let telemetry = Telemetry { json: mqtt.as_ref().map(|(m, _)| m.clone()), sparkplug: sparkplug.clone() };
        Ok(Sessions { mqtt, incoming, sparkplug, sparkplug_pending, sparkplug_queue, telemetry })
    }

    /// The disk queue's figures for the stats message and the Sparkplug metrics: the JSON
    /// session's; with Sparkplug alone, the Sparkplug session's.
    pub fn queue_stats(&self) -> Option<Arc<QueueStats>> {
        self.mqtt.as_ref().map(|(m, _)| m.queue.clone()).or_else(|| self.sparkplug_queue.clone())
    }

    /// Every disk queue, named for the alarms: both with `dialect: both`.
    pub fn queues(&self) -> Vec<(String, Arc<QueueStats>)> {
        let json = self.mqtt.as_ref().map(|(m, _)| ("MQTT queue".to_string(), m.queue.clone()));
        let sparkplug = self.sparkplug_queue.clone().map(|q| ("Sparkplug queue".to_string(), q));
        json.into_iter().chain(sparkplug).collect()
    }

    /// Both command doors (JSON and Sparkplug) pass `guard` and send to `route`.
    pub fn commander(&self, route: mpsc::Sender<commands::CommandRequest>, guard: Arc<Guard>) -> Commander {
        Commander { route, rebirth: self.sparkplug.as_ref().map(|s| s.rebirth.clone()), guard }
    }

    /// Start everything that publishes through the sessions: camera status, point values, the
    /// JSON command door, and the Sparkplug session. Returns the Sparkplug session's task.
    pub fn start_publishers(
        &mut self,
        config: &Config,
        stats: &Arc<NodeStats>,
        points: &BTreeMap<String, Point>,
        commander: Commander,
        background: &mut Vec<JoinHandle<()>>,
    ) -> Result<Option<JoinHandle<()>>, StartError> {
        if let Some((m, _)) = &self.mqtt {
            let mut cameras: BTreeMap<&str, Arc<CameraStats>> = BTreeMap::new();
            for t in stats.tasks.values() {
                cameras.entry(t.camera.as_str()).or_insert_with(|| t.camera_stats.clone());
            }
            for (name, s) in cameras {
                background.push(tokio::spawn(crate::telemetry::cameras::publish(name.into(), s, m.clone())));
            }
            for p in points.values() {
                background.push(tokio::spawn(crate::telemetry::points::publish(p.clone(), m.clone())));
            }
            if let Some(incoming) = self.incoming.take() {
                background.push(tokio::spawn(commands::serve_json(incoming, m.clone(), commander.clone())));
            }
        }
        let (Some(pending), Some(m)) = (self.sparkplug_pending.take(), &config.mqtt) else { return Ok(None) };
        let durable = match &m.queue {
            Some(q) => {
                // Its own queue beside the JSON one: the two sessions acknowledge differently.
                let q = QueueConfig { dir: q.dir.join("sparkplug"), ..q.clone() };
                let barrier = sparkplug::Topics::new(&config.node).barrier();
                let stats = self.sparkplug_queue.clone().unwrap_or_default();
                Some(Durable::open(&q, AckBy::Barrier(barrier), "Sparkplug queue", stats).map_err(StartError::Other)?)
            }
            None => None,
        };
        let (task, _counts) = pending
            .start(m, &config.node, stats.clone(), Arc::new(points.clone()), commander, durable)
            .map_err(StartError::Other)?;
        Ok(Some(task))
    }
}
