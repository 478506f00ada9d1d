//! Remote commands: one set, reached through two doors.
//!
//! - Plain JSON on `<base>/commands`, answered with the same id on
//!   `<base>/commands/response` ([`serve_json`]).
//! - Sparkplug NCMD/DCMD metrics (see [`super::sparkplug`]), which map onto
//!   the same [`Command`]s.
//!
//! Commands are never a way in: retained messages are ignored (a command
//! left on the broker must not fire again at every restart), payloads are
//! size-limited, every command is parsed against its schema (unknown
//! commands and unknown or missing fields are refused with the reason),
//! passes the [`super::guard`] (not stale, not a replayed id, not above the
//! node's command rate), and is logged with its source and result under
//! `linesight::audit`. What a command may change is limited by the config:
//! a task's threshold range and whether it may be disabled
//! (`tasks.<task>.commands`), and the only write it can cause is to a point
//! the config marks `writable`, inside its `min` and `max`, through the same
//! guarded, rate-limited path as every other write.
//!
//! ```json
//! {"id": "42", "ts": "2026-11-28T04:30:00Z", "command": "set-point", "point": "speed_setpoint", "value": 12.5}
//! {"id": "42", "ok": true}
//! {"id": "43", "ok": false, "error": "point `oven_temp` is not writable: the config does not mark it `writable`"}
//! ```

use std::sync::Arc;

use rumqttc::QoS;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Notify};

use super::guard::{CommandId, Guard, Origin, MAX_ID_CHARS};
use super::mqtt::{Incoming, Mqtt};

/// Larger command payloads are refused unread.
pub const MAX_COMMAND_BYTES: usize = 4096;

/// Every command there is. The JSON form is this with `command` as the tag
/// and an `id` beside it; unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Command {
    /// Write a point the config marks `writable`.
    SetPoint { point: String, value: Value },
    /// Inspect again after `disable-task`.
    EnableTask { task: String },
    /// Stop trusting a task's model: its parts get ERROR and are rejected.
    DisableTask { task: String },
    /// A task's NG threshold, inside the task's command limits; lasts until restart.
    SetThreshold { task: String, threshold: f64 },
    /// Sparkplug: publish NBIRTH and every DBIRTH again.
    Rebirth,
    /// Read the config file again and apply what may change while running, or refuse it whole.
    Reload,
    /// Check a signed model package in the drop folder (`package`: its path there), stage it in
    /// a slot of `model`, run its golden images, and shadow it beside production.
    InstallModel { model: String, package: String },
    /// Shadow an installed version of `model` beside production (a fresh agreement table).
    ShadowModel { model: String, version: u64 },
    /// Stop `model`'s shadow.
    StopShadow { model: String },
    /// Make a version of `model` (default: the one in shadow) the production model, between two parts.
    PromoteModel {
        model: String,
        #[serde(default)]
        version: Option<u64>,
    },
    /// Return `model` to the version accepted before the current one.
    RollbackModel { model: String },
    /// An operator's review of a captured part: `false-reject`, `missed-defect`, `good` or
    /// `defect`, written into the part's capture sidecar (the newest record of `part_id`).
    MarkPart { task: String, part_id: u64, mark: String },
}

pub const KNOWN: &str = "set-point, enable-task, disable-task, set-threshold, rebirth, reload, install-model, shadow-model, stop-shadow, promote-model, rollback-model, mark-part";

/// A command on its way to the part of the node that acts on it (`app`
/// routes it to the task controls or the Modbus outputs), with the door it
/// came through and where the answer goes.
#[derive(Debug)]
pub struct CommandRequest {
    pub command: Command,
    /// The topic it came on, for the audit log.
    pub source: String,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// Both doors' way to execute a command. Cheap to clone.
#[derive(Clone)]
pub struct Commander {
    /// Where commands go to be executed; answered through each request's `reply`.
    pub route: mpsc::Sender<CommandRequest>,
    /// Wakes the Sparkplug session for a rebirth; None without Sparkplug.
    pub rebirth: Option<Arc<Notify>>,
    /// Time, replay and rate checks, shared by both doors.
    pub guard: Arc<Guard>,
}

impl Commander {
    /// Check a message's `count` commands before any of them runs: not stale, not a replay, not
    /// above the node's command rate (see [`super::guard`]). A refusal is logged under
    /// `linesight::audit` with its reason.
    pub async fn admit(&self, origin: &Origin, count: usize) -> Result<(), String> {
        let guard = self.guard.clone();
        let o = origin.clone();
        let now = tokio::time::Instant::now();
        let now_ms = crate::util::time::now_ms();
        // The id file is written (and fsynced) before the command runs: off the async threads.
        let result = tokio::task::spawn_blocking(move || guard.admit(&o, count, now_ms, now))
            .await
            .unwrap_or_else(|e| Err(format!("command refused: the replay check failed ({e})")));
        if let Err(e) = &result {
            tracing::warn!(target: "linesight::audit", source = %origin.source, id = %origin.id, error = %e, "command refused");
        }
        result
    }

    /// Execute one validated command; `source` (a topic) goes into the audit log.
    pub async fn execute(&self, cmd: &Command, source: &str) -> Result<(), String> {
        let result = self.run(cmd, source).await;
        match &result {
            Ok(()) => tracing::info!(target: "linesight::audit", %source, command = ?cmd, "command executed"),
            Err(e) => {
                tracing::warn!(target: "linesight::audit", %source, command = ?cmd, error = %e, "command refused")
            }
        }
        result
    }

    async fn run(&self, cmd: &Command, source: &str) -> Result<(), String> {
        if *cmd == Command::Rebirth {
            return match &self.rebirth {
                Some(n) => {
                    n.notify_one();
                    Ok(())
                }
                None => Err("rebirth needs the Sparkplug dialect (mqtt.dialect: sparkplug or both)".into()),
            };
        }
        let stopping = || "the node is stopping; command not executed".to_string();
        let (reply, answer) = oneshot::channel();
        let request = CommandRequest { command: cmd.clone(), source: source.to_string(), reply };
        self.route.send(request).await.map_err(|_| stopping())?;
        answer.await.unwrap_or_else(|_| Err(stopping()))
    }
}

/// A JSON command and when its sender says it sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonCommand {
    pub command: Command,
    /// `ts` (RFC 3339 or ms since 1970) as ms since 1970, if given.
    pub sent_ms: Option<i64>,
}

/// `ts`: an RFC 3339 string or a number of milliseconds since 1970.
fn timestamp(ts: &Value) -> Result<i64, String> {
    let bad =
        || format!("`ts` {ts} is not a time: give RFC 3339 (e.g. \"2026-11-28T04:30:00Z\") or milliseconds since 1970");
    match ts {
        Value::String(s) => crate::util::time::parse_rfc3339_ms(s).ok_or_else(bad),
        Value::Number(n) => {
            n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)).ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// Parse a JSON command. Returns its id (null when unreadable) and the
/// command, or why it was refused.
pub fn parse_json(payload: &[u8]) -> (Value, Result<JsonCommand, String>) {
    if payload.len() > MAX_COMMAND_BYTES {
        return (
            Value::Null,
            Err(format!("command of {} bytes refused: the limit is {MAX_COMMAND_BYTES}", payload.len())),
        );
    }
    let mut doc: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return (Value::Null, Err(format!("not JSON: {e}"))),
    };
    let Some(obj) = doc.as_object_mut() else {
        return (Value::Null, Err("a command is a JSON object".into()));
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    if !(id.is_string() || id.is_number()) {
        return (id, Err("every command needs an `id` (a string or a number) to answer to".into()));
    }
    if id.as_str().map_or(id.to_string().chars().count(), |s| s.chars().count()) > MAX_ID_CHARS {
        return (id, Err(format!("`id` is longer than {MAX_ID_CHARS} characters")));
    }
    let sent_ms = match obj.remove("ts").map(|ts| timestamp(&ts)).transpose() {
        Ok(ms) => ms,
        Err(e) => return (id, Err(e)),
    };
    let cmd = match obj.get("command") {
        None => Err(format!("missing `command`; known: {KNOWN}")),
        Some(Value::String(c)) if !KNOWN.split(", ").any(|k| k == c) => {
            Err(format!("unknown command `{c}`; known: {KNOWN}"))
        }
        Some(Value::String(_)) => serde_json::from_value::<Command>(doc).map_err(|e| e.to_string()),
        Some(_) => Err("`command` must be a string".into()),
    };
    (id, cmd.map(|command| JsonCommand { command, sent_ms }))
}

/// Answer JSON commands until the MQTT task stops.
pub async fn serve_json(mut incoming: mpsc::Receiver<Incoming>, mqtt: Mqtt, commander: Commander) {
    while let Some(msg) = incoming.recv().await {
        if msg.topic != mqtt.topics.commands() {
            continue;
        }
        if msg.retain {
            tracing::warn!(target: "linesight::audit", topic = %msg.topic, "retained command ignored (clear it from the broker)");
            continue;
        }
        let (id, parsed) = parse_json(&msg.payload);
        let result = match parsed {
            Ok(c) => {
                let origin = Origin { source: msg.topic.clone(), id: CommandId::json(&id), sent_ms: c.sent_ms };
                match commander.admit(&origin, 1).await {
                    Ok(()) => commander.execute(&c.command, &msg.topic).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                tracing::warn!(target: "linesight::audit", topic = %msg.topic, id = %id, error = %e, "command refused");
                Err(e)
            }
        };
        let reply = match result {
            Ok(()) => json!({"id": id, "ok": true}),
            Err(e) => json!({"id": id, "ok": false, "error": e}),
        };
        mqtt.publish_waiting(
            mqtt.topics.command_responses(),
            serde_json::to_vec(&reply).unwrap_or_default(),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> (Value, Result<Command, String>) {
        let (id, c) = parse_json(s.as_bytes());
        (id, c.map(|c| c.command))
    }

    fn sent(s: &str) -> Result<Option<i64>, String> {
        parse_json(s.as_bytes()).1.map(|c| c.sent_ms)
    }

    #[test]
    fn ts_is_rfc3339_or_epoch_ms_and_optional() {
        assert_eq!(sent(r#"{"id":1,"command":"rebirth"}"#), Ok(None));
        assert_eq!(sent(r#"{"id":1,"command":"rebirth","ts":1795840496789}"#), Ok(Some(1_795_840_496_789)));
        assert_eq!(
            sent(r#"{"id":1,"command":"rebirth","ts":"2026-11-28T04:34:56.789Z"}"#),
            Ok(Some(1_795_840_496_789))
        );
        for bad in [r#""yesterday""#, "true", "[1]", r#""2026-11-28""#] {
            let e = sent(&format!(r#"{{"id":1,"command":"rebirth","ts":{bad}}}"#)).unwrap_err();
            assert!(e.contains("is not a time") && e.contains("RFC 3339"), "{e}");
        }
        let long = format!(r#"{{"id":"{}","command":"rebirth"}}"#, "x".repeat(MAX_ID_CHARS + 1));
        assert!(sent(&long).unwrap_err().contains("longer than 128"));
    }

    #[test]
    fn every_command_parses_with_its_fields() {
        let (id, c) = parse(r#"{"id": 7, "command": "set-threshold", "task": "t", "threshold": 0.7}"#);
        assert_eq!(id, json!(7));
        assert_eq!(c.unwrap(), Command::SetThreshold { task: "t".into(), threshold: 0.7 });
        assert_eq!(parse(r#"{"id":"a","command":"rebirth"}"#).1.unwrap(), Command::Rebirth);
        assert_eq!(
            parse(r#"{"id":"a","command":"disable-task","task":"x"}"#).1.unwrap(),
            Command::DisableTask { task: "x".into() }
        );
        assert_eq!(
            parse(r#"{"id":"a","command":"set-point","point":"p","value":true}"#).1.unwrap(),
            Command::SetPoint { point: "p".into(), value: json!(true) }
        );
    }

    #[test]
    fn schema_violations_are_refused_with_the_reason() {
        let e = parse(r#"{"id":1,"command":"set-threshold","task":"t","threshold":0.7,"force":true}"#).1.unwrap_err();
        assert!(e.contains("unknown field `force`"), "{e}");
        let e = parse(r#"{"id":1,"command":"set-threshold","task":"t"}"#).1.unwrap_err();
        assert!(e.contains("missing field `threshold`"), "{e}");
        let e = parse(r#"{"id":1,"command":"set-threshold","task":"t","threshold":"high"}"#).1.unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
        let e = parse(r#"{"id":1,"command":"format-disk"}"#).1.unwrap_err();
        assert!(e.contains("unknown command `format-disk`") && e.contains("set-point"), "{e}");
        assert!(parse(r#"{"command":"rebirth"}"#).1.unwrap_err().contains("`id`"));
        assert!(parse(r#"[1,2]"#).1.unwrap_err().contains("JSON object"));
        assert!(parse("{not json").1.unwrap_err().starts_with("not JSON"));
        let big = format!(r#"{{"id":1,"command":"rebirth","pad":"{}"}}"#, "x".repeat(MAX_COMMAND_BYTES));
        assert!(parse(&big).1.unwrap_err().contains("limit"));
    }
}
