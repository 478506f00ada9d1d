//! Remote commands (plain JSON dialect) on `<base>/commands`; the answer, with
//! the same id, on `<base>/commands/response`.
//!
//! Commands are never a way in: retained messages are ignored (a command
//! left on the broker must not fire again at every restart), payloads are
//! size-limited, every command is validated and logged with its result
//! (target `linesight::audit`), and the only write a command can cause is to
//! a point the config marks `writable`, through the same guarded, rate-limited
//! path as every other write.
//!
//! ```json
//! {"id": "42", "command": "set-point", "point": "speed_setpoint", "value": 12.5}
//! {"id": "42", "ok": true}
//! {"id": "43", "ok": false, "error": "point `oven_temp` is not writable: the config does not mark it `writable`"}
//! ```

use rumqttc::QoS;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::mqtt::{Incoming, Mqtt};
use crate::modbus::points::Points;
use crate::modbus::Outputs;

/// Larger command payloads are refused unread.
pub const MAX_COMMAND_BYTES: usize = 4096;

/// Answer commands until the MQTT task stops.
pub async fn serve(mut incoming: mpsc::Receiver<Incoming>, mqtt: Mqtt, points: Points, outputs: Outputs) {
    while let Some(msg) = incoming.recv().await {
        if msg.topic != mqtt.topics.commands() {
            continue;
        }
        if msg.retain {
            tracing::warn!(target: "linesight::audit", topic = %msg.topic, "retained command ignored (clear it from the broker)");
            continue;
        }
        let (id, result) = handle(&msg.payload, &points, &outputs).await;
        match &result {
            Ok(()) => tracing::info!(target: "linesight::audit", id = %id, "command executed"),
            Err(e) => tracing::warn!(target: "linesight::audit", id = %id, error = %e, "command refused"),
        }
        let reply = match result {
            Ok(()) => json!({"id": id, "ok": true}),
            Err(e) => json!({"id": id, "ok": false, "error": e}),
        };
        mqtt.publish(
            mqtt.topics.command_responses(),
            serde_json::to_vec(&reply).unwrap_or_default(),
            QoS::AtLeastOnce,
            false,
        );
    }
}

/// Validate and execute one command; returns its id (null when unreadable).
pub async fn handle(payload: &[u8], points: &Points, outputs: &Outputs) -> (Value, Result<(), String>) {
    if payload.len() > MAX_COMMAND_BYTES {
        return (
            Value::Null,
            Err(format!("command of {} bytes refused: the limit is {MAX_COMMAND_BYTES}", payload.len())),
        );
    }
    let doc: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return (Value::Null, Err(format!("not JSON: {e}"))),
    };
    let id = doc.get("id").cloned().unwrap_or(Value::Null);
    if !(id.is_string() || id.is_number()) {
        return (id, Err("every command needs an `id` (a string or a number) to answer to".into()));
    }
    let result = match doc.get("command").and_then(Value::as_str) {
        Some("set-point") => set_point(&doc, points, outputs).await,
        Some(other) => Err(format!("unknown command `{other}`; known: set-point")),
        None => Err("missing `command`".into()),
    };
    (id, result)
}

async fn set_point(doc: &Value, points: &Points, outputs: &Outputs) -> Result<(), String> {
    if let Some(obj) = doc.as_object() {
        if let Some(k) = obj.keys().find(|k| !["id", "command", "point", "value"].contains(&k.as_str())) {
            return Err(format!("unknown key `{k}` in set-point; it takes `point` and `value`"));
        }
    }
    let name = doc.get("point").and_then(Value::as_str).ok_or("set-point needs `point` (a name)")?;
    let value = doc.get("value").ok_or("set-point needs `value`")?;
    let point = points.get(name).ok_or_else(|| format!("no point `{name}` in the config"))?;
    if !point.config.writable {
        return Err(format!("point `{name}` is not writable: the config does not mark it `writable`"));
    }
    outputs.write_point(name, &point.spec, value).await
}
