//! Which metrics the edge node and its devices publish, and their values now.
//!
//! Every function here is a snapshot: the session compares snapshots and
//! sends what changed (report by exception); a birth sends a whole snapshot.
//! Names are documented in docs/mqtt.md; a metric's datatype never changes
//! after its birth, so a value that is missing is sent as null of its type.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde_json::Value as Json;

use super::proto::{self, DataType};
use crate::config::PointType;
use crate::part::sample::{Point, Value};
use crate::stats::{DeviceStats, MachineSample, NodeStats, TaskEntry};

/// A metric's value. `Null` keeps its datatype in [`Metric`].
#[derive(Debug, Clone, PartialEq)]
pub enum MValue {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Text(String),
    Null,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub datatype: DataType,
    pub value: MValue,
}

impl Metric {
    pub fn new(name: impl Into<String>, datatype: DataType, value: MValue) -> Self {
        Metric { name: name.into(), datatype, value }
    }
    pub fn text(name: impl Into<String>, v: impl Into<String>) -> Self {
        Metric::new(name, DataType::String, MValue::Text(v.into()))
    }
    pub fn uint(name: impl Into<String>, v: u64) -> Self {
        Metric::new(name, DataType::UInt64, MValue::UInt(v))
    }
    pub fn double(name: impl Into<String>, v: Option<f64>) -> Self {
        Metric::new(name, DataType::Double, v.filter(|x| x.is_finite()).map_or(MValue::Null, MValue::Double))
    }
    pub fn boolean(name: impl Into<String>, v: bool) -> Self {
        Metric::new(name, DataType::Boolean, MValue::Bool(v))
    }

    /// The protobuf metric. Births carry the datatype; data messages may
    /// leave it out (6.4.6) but linesight always sends it: a few bytes buy a
    /// host that can decode a message without its birth.
    pub fn to_proto(&self, timestamp: u64) -> proto::Metric {
        use proto::Value as V;
        let value = match &self.value {
            MValue::Bool(b) => Some(V::BooleanValue(*b)),
            // Int64 and UInt64 both travel in long_value (two's complement for negatives).
            MValue::Int(i) => Some(V::LongValue(*i as u64)),
            MValue::UInt(u) => Some(V::LongValue(*u)),
            MValue::Double(d) => Some(V::DoubleValue(*d)),
            MValue::Text(s) => Some(V::StringValue(s.clone())),
            MValue::Null => None,
        };
        proto::Metric {
            name: Some(self.name.clone()),
            timestamp: Some(timestamp),
            datatype: Some(self.datatype as u32),
            is_null: matches!(self.value, MValue::Null).then_some(true),
            value,
            ..Default::default()
        }
    }
}

/// A metric value from a command, as JSON (for `set-point`), checked against its datatype.
pub fn command_value(m: &proto::Metric) -> Result<Json, String> {
    use proto::Value as V;
    let name = m.name.as_deref().unwrap_or("?");
    let datatype = m.datatype.and_then(DataType::from_code);
    Ok(match (&m.value, datatype) {
        (Some(V::BooleanValue(b)), _) => Json::from(*b),
        (Some(V::DoubleValue(d)), _) => Json::from(*d),
        (Some(V::FloatValue(f)), _) => Json::from(f64::from(*f)),
        (Some(V::StringValue(s)), _) => Json::from(s.clone()),
        (Some(V::LongValue(l)), Some(DataType::Int64)) => Json::from(*l as i64),
        (Some(V::LongValue(l)), _) => Json::from(*l),
        (Some(V::IntValue(i)), Some(DataType::Int8 | DataType::Int16 | DataType::Int32)) => Json::from(*i as i32),
        (Some(V::IntValue(i)), _) => Json::from(*i),
        (Some(V::BytesValue(_)), _) | (None, _) => {
            return Err(format!("metric `{name}` carries no value of a supported type"))
        }
    })
}

/// The node's own metrics that change with the node's state (reported by exception).
pub fn node(stats: &NodeStats, commands: &super::CommandCounts) -> Vec<Metric> {
    let mut v = vec![Metric::text("Properties/Software Version", env!("CARGO_PKG_VERSION"))];
    if let Some(q) = stats.mqtt_queue.as_ref().filter(|q| q.configured.load(Ordering::Relaxed)) {
        v.push(Metric::uint("Queue/Waiting", q.waiting.load(Ordering::Relaxed)));
        v.push(Metric::uint("Queue/Dropped", q.dropped.load(Ordering::Relaxed)));
        v.push(Metric::uint("Queue/Lost", q.lost.load(Ordering::Relaxed)));
    }
    v.push(Metric::uint("Commands/Executed", commands.executed.load(Ordering::Relaxed)));
    v.push(Metric::uint("Commands/Refused", commands.refused.load(Ordering::Relaxed)));
    v.push(Metric::text("Commands/Last Refusal", commands.last_refusal()));
    v.extend(machine(&stats.machine.latest()));
    v.extend(rollout(&stats.rollout_doc()));
    v
}

/// Each model's rollout state (docs/rollout.md): the version production runs (`config` for the
/// config file's own model), the candidate in shadow (`""` for none), the last rollout event.
pub fn rollout(doc: &Json) -> Vec<Metric> {
    let mut v = Vec::new();
    for (model, m) in doc.as_object().into_iter().flatten() {
        let active = m["active"].as_u64().map_or("config".to_string(), |n| n.to_string());
        v.push(Metric::text(format!("Models/{model}/Active Version"), active));
        let candidate = m["shadow"]["candidate"].as_str().unwrap_or("").to_string();
        v.push(Metric::text(format!("Models/{model}/Shadow Candidate"), candidate));
        let last = &m["last"];
        let last = match (last["event"].as_str(), last["result"].as_str()) {
            (Some(e), Some(r)) => match last["reason"].as_str() {
                Some(why) => format!("{e} {r}: {why}"),
                None => format!("{e} {r}"),
            },
            _ => String::new(),
        };
        v.push(Metric::text(format!("Models/{model}/Last Event"), last));
    }
    v
}

/// The rollout commands of each model, declared in NBIRTH so a host can write them.
pub fn rollout_commands(doc: &Json) -> Vec<Metric> {
    let mut v = Vec::new();
    for model in doc.as_object().into_iter().flat_map(|o| o.keys()) {
        v.push(Metric::text(format!("Models/{model}/Install"), ""));
        v.push(Metric::uint(format!("Models/{model}/Shadow"), 0));
        v.push(Metric::boolean(format!("Models/{model}/Stop Shadow"), false));
        v.push(Metric::uint(format!("Models/{model}/Promote"), 0));
        v.push(Metric::boolean(format!("Models/{model}/Rollback"), false));
    }
    v
}

/// Machine health metrics (docs/mqtt.md): CPU in cores over the sampling interval, sizes in
/// MiB, temperatures in degrees C, the GPU's load 0..1. The set is fixed from the node's start
/// (thermal zones are found once), so every name is in the birth; a figure the machine does not
/// give is null of its type.
pub fn machine(m: &MachineSample) -> Vec<Metric> {
    let round = |x: f64, by: f64| (x * by).round() / by;
    let mib = |name: String, b: Option<u64>| {
        Metric::new(name, DataType::UInt64, b.map_or(MValue::Null, |b| MValue::UInt(b >> 20)))
    };
    let mut v = vec![Metric::double("Machine/CPU/Process", m.cpu_process.map(|c| round(c, 100.0)))];
    for (stage, cores) in m.cpu_by_stage() {
        let name = match stage {
            crate::stats::machine::Stage::Capture => "Capture",
            crate::stats::machine::Stage::Inference => "Inference",
            crate::stats::machine::Stage::Runtime => "Runtime",
            crate::stats::machine::Stage::Other => "Other",
        };
        v.push(Metric::double(format!("Machine/CPU/{name}"), cores.map(|c| round(c, 100.0))));
    }
    v.push(mib("Machine/Memory/Total MiB".into(), m.memory_total_bytes));
    v.push(mib("Machine/Memory/Available MiB".into(), m.memory_available_bytes));
    v.push(mib("Machine/Memory/Process RSS MiB".into(), m.rss_bytes));
    for (role, d) in &m.disks {
        v.push(mib(format!("Machine/Disk/{role}/Free MiB"), d.free_bytes));
    }
    for (zone, t) in &m.temperatures_c {
        v.push(Metric::double(format!("Machine/Temperature/{zone}"), t.map(|t| round(t, 10.0))));
    }
    v.push(Metric::double("Machine/GPU/Load", m.gpu_load.map(|l| round(l, 1000.0))));
    v
}

/// The metrics of one part's result, sent through the disk queue as NDATA.
pub fn result(task: &str, doc: &Json) -> Vec<Metric> {
    let p = |k: &str| format!("Results/{task}/{k}");
    let s = |k: &str| doc.get(k).and_then(Json::as_str).unwrap_or("").to_string();
    vec![
        Metric::new(
            p("Part Id"),
            DataType::UInt64,
            doc.get("part_id").and_then(Json::as_u64).map_or(MValue::Null, MValue::UInt),
        ),
        Metric::text(p("Verdict"), s("verdict")),
        Metric::double(p("NG Score"), doc.get("ng_score").and_then(Json::as_f64)),
        Metric::text(p("Class"), s("class")),
        Metric::text(p("Reject"), doc.pointer("/reject/status").and_then(Json::as_str).unwrap_or("none").to_string()),
        Metric::text(p("Error"), s("error")),
    ]
}

/// The result metrics before any part: the same names and types, null values.
pub fn result_unset(task: &str) -> Vec<Metric> {
    result(task, &Json::Null).into_iter().map(|m| Metric { value: MValue::Null, ..m }).collect()
}

/// Alarm metrics from the supervisor's alarm document; through the disk queue as NDATA.
pub fn alarms(doc: &Json) -> Vec<Metric> {
    let faults: Vec<&str> = doc
        .get("faults")
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    vec![Metric::uint("Alarms/Count", faults.len() as u64), Metric::text("Alarms/Active", faults.join("\n"))]
}

/// A task device's metrics; `parts_per_s` is measured by the session between reports.
pub fn task(t: &TaskEntry, parts_per_s: Option<f64>) -> Vec<Metric> {
    let s = &t.stats;
    let c = &t.camera_stats;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let c2d = s.capture_to_decision_ms.percentiles();
    let inf = s.inference_ms.percentiles();
    let pct = |p: f64, n: usize| (n > 0).then_some(p);
    let doc = t.model();
    let model = |k: &str| doc.get(k).and_then(Json::as_str).unwrap_or("").to_string();
    let shadow = s.shadow.counts();
    let mut out = vec![
        Metric::text("Camera/Name", t.camera.clone()),
        Metric::text("Camera/Status", c.status().as_str()),
        Metric::uint("Camera/Frames In", get(&c.frames_in)),
        Metric::uint("Camera/Dropped", get(&c.dropped)),
        Metric::uint("Camera/Refused", get(&c.refused)),
        Metric::uint("Camera/Reconnects", get(&c.reconnects)),
        Metric::boolean("Inspection/Enabled", t.control.enabled()),
        Metric::double("Inspection/NG Threshold", Some(round4(f64::from(t.control.threshold())))),
        Metric::uint("Counts/OK", get(&s.ok)),
        Metric::uint("Counts/NG", get(&s.ng)),
        Metric::uint("Counts/Error", get(&s.error)),
        Metric::uint("Counts/Uncertain", get(&s.uncertain)),
        Metric::uint("Counts/Flagged", get(&s.flagged)),
        Metric::double("Counts/Parts per Second", parts_per_s.map(|r| (r * 10.0).round() / 10.0)),
        Metric::double("Latency/Capture to Decision p50 ms", pct(c2d.p50, c2d.n)),
        Metric::double("Latency/Capture to Decision p99 ms", pct(c2d.p99, c2d.n)),
        Metric::double("Latency/Inference p50 ms", pct(inf.p50, inf.n)),
        Metric::double("Latency/Inference p99 ms", pct(inf.p99, inf.n)),
        Metric::uint("Rejects/Fired", get(&s.rejects_fired)),
        Metric::uint("Rejects/Failed", get(&s.rejects_failed)),
        Metric::uint("Rejects/Deadline Misses", get(&s.deadline_misses)),
        Metric::text("Model/Name", model("name")),
        Metric::text("Model/Version", model("version")),
        Metric::text("Model/SHA256", model("sha256")),
        Metric::text("Model/Provider", t.provider.clone()),
        // Shadow mode: the candidate in shadow ("" when none) and its agreement with production.
        Metric::text("Shadow/Candidate", s.shadow.candidate().unwrap_or_default()),
        Metric::uint("Shadow/Both OK", shadow[0].1),
        Metric::uint("Shadow/Both NG", shadow[1].1),
        Metric::uint("Shadow/Production Only NG", shadow[2].1),
        Metric::uint("Shadow/Candidate Only NG", shadow[3].1),
        Metric::uint("Shadow/Other", shadow[4].1),
        Metric::double("Shadow/Score Drift", s.shadow.drift().map(round4)),
    ];
    // Fixed at start (a reload cannot add or remove `capture`), so births and data agree.
    if let Some(cap) = &t.capture {
        out.extend([
            Metric::uint("Capture/Written", get(&cap.written)),
            Metric::uint("Capture/Bytes", get(&cap.bytes)),
            Metric::uint("Capture/Files", get(&cap.files)),
            Metric::uint("Capture/Dropped", get(&cap.dropped)),
            Metric::uint("Capture/Deleted", get(&cap.deleted)),
            Metric::uint("Capture/Errors", get(&cap.errors)),
        ]);
    }
    out
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// A Modbus device's metrics: its link, and every point read from it.
pub fn modbus(device: &str, s: &DeviceStats, points: &BTreeMap<String, Point>) -> Vec<Metric> {
    let mut v = vec![
        Metric::text("Link/State", s.state().as_str()),
        Metric::uint("Link/Reads", s.reads.load(Ordering::Relaxed)),
        Metric::uint("Link/Writes", s.writes.load(Ordering::Relaxed)),
        Metric::uint("Link/Failures", s.failures.load(Ordering::Relaxed)),
        Metric::uint("Link/Refusals", s.refusals.load(Ordering::Relaxed)),
        Metric::text(
            "Link/Last Error",
            s.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default(),
        ),
    ];
    for (name, p) in points.iter().filter(|(_, p)| p.config.device == device) {
        let sample = p.rx.borrow().clone();
        let q = sample.quality_at(tokio::time::Instant::now(), p.config.poll.get());
        let datatype = point_type(p);
        let value = match (&sample.value, q) {
            (_, crate::part::sample::Quality::Bad | crate::part::sample::Quality::Unknown) | (None, _) => MValue::Null,
            (Some(val), _) => convert(val, datatype),
        };
        v.push(Metric::new(format!("Points/{name}"), datatype, value));
        let quality = serde_json::to_value(q).ok().and_then(|j| j.as_str().map(str::to_string)).unwrap_or_default();
        v.push(Metric::text(format!("Points/{name}/Quality"), quality));
    }
    v
}

/// The Sparkplug type of a point's value (scaled integers are doubles).
pub fn point_type(p: &Point) -> DataType {
    let scaled = p.scaled;
    match p.ty {
        PointType::Bool => DataType::Boolean,
        PointType::String => DataType::String,
        PointType::F32 | PointType::F64 => DataType::Double,
        _ if scaled => DataType::Double,
        PointType::U16 | PointType::U32 | PointType::U64 => DataType::UInt64,
        PointType::I16 | PointType::I32 | PointType::I64 => DataType::Int64,
    }
}

fn convert(v: &Value, datatype: DataType) -> MValue {
    use Value as C;
    match (v, datatype) {
        (C::Bool(b), DataType::Boolean) => MValue::Bool(*b),
        (C::Text(s), DataType::String) => MValue::Text(s.clone()),
        (C::UInt(u), DataType::UInt64) => MValue::UInt(*u),
        (C::Int(i), DataType::Int64) => MValue::Int(*i),
        (C::UInt(u), DataType::Int64) => i64::try_from(*u).map_or(MValue::Null, MValue::Int),
        (C::Int(i), DataType::UInt64) => u64::try_from(*i).map_or(MValue::Null, MValue::UInt),
        (other, DataType::Double) => other.as_f64().filter(|x| x.is_finite()).map_or(MValue::Null, MValue::Double),
        _ => MValue::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_capturing_task_reports_its_capture_figures() {
        use crate::part::control::{CommandLimits, TaskControl};
        use std::sync::atomic::AtomicU64;
        use std::sync::{Arc, RwLock};
        let entry = |capture: Option<Arc<crate::stats::CaptureStats>>| TaskEntry {
            camera: "top".into(),
            camera_stats: Default::default(),
            stats: Default::default(),
            provider: "cpu".into(),
            model: Arc::new(RwLock::new(json!({}))),
            handshake: None,
            control: Arc::new(TaskControl::new(
                "t",
                0.5,
                CommandLimits::for_task(&crate::config::TaskCommandsConfig::default(), 0.5),
            )),
            events_waited: Arc::new(AtomicU64::new(0)),
            capture,
        };
        let cap = Arc::new(crate::stats::CaptureStats::default());
        cap.written.store(7, Ordering::Relaxed);
        cap.dropped.store(2, Ordering::Relaxed);
        let with = task(&entry(Some(cap)), None);
        let value = |name: &str| with.iter().find(|m| m.name == name).map(|m| m.value.clone());
        assert_eq!(value("Capture/Written"), Some(MValue::UInt(7)));
        assert_eq!(value("Capture/Dropped"), Some(MValue::UInt(2)));
        for name in ["Capture/Bytes", "Capture/Files", "Capture/Deleted", "Capture/Errors"] {
            assert_eq!(value(name), Some(MValue::UInt(0)), "{name}");
        }
        let without = task(&entry(None), None);
        assert!(without.iter().all(|m| !m.name.starts_with("Capture/")), "no capture, no figures");
    }

    #[test]
    fn values_keep_their_type_and_nulls_say_so() {
        let m = Metric::new("x", DataType::Int64, MValue::Int(-2)).to_proto(5);
        assert_eq!(m.value, Some(proto::Value::LongValue(u64::MAX - 1)));
        assert_eq!(m.datatype, Some(4));
        let n = Metric::double("y", None).to_proto(5);
        assert_eq!((n.is_null, n.value, n.datatype), (Some(true), None, Some(10)));
    }

    #[test]
    fn result_metrics_from_a_result_document() {
        let doc =
            json!({"part_id": 7, "verdict": "NG", "ng_score": 0.93, "class": "scratch", "reject": {"status": "fired"}});
        let m = result("top", &doc);
        assert_eq!(m[0], Metric::new("Results/top/Part Id", DataType::UInt64, MValue::UInt(7)));
        assert_eq!(m[1].value, MValue::Text("NG".into()));
        assert_eq!(m[4].value, MValue::Text("fired".into()));
        let unset = result_unset("top");
        assert!(unset.iter().all(|m| m.value == MValue::Null));
        assert_eq!(
            unset.iter().map(|m| m.datatype).collect::<Vec<_>>(),
            m.iter().map(|m| m.datatype).collect::<Vec<_>>()
        );
    }

    #[test]
    fn command_values_follow_the_declared_type() {
        let long = |v: u64, t: DataType| proto::Metric {
            name: Some("p".into()),
            datatype: Some(t as u32),
            value: Some(proto::Value::LongValue(v)),
            ..Default::default()
        };
        assert_eq!(command_value(&long(u64::MAX, DataType::Int64)).unwrap(), json!(-1));
        assert_eq!(command_value(&long(5, DataType::UInt64)).unwrap(), json!(5));
        let empty = proto::Metric { name: Some("p".into()), ..Default::default() };
        assert!(command_value(&empty).unwrap_err().contains("`p`"));
    }
}
