//! `/metrics`: the node's figures in the Prometheus text exposition format (version 0.0.4).
//!
//! Names follow Prometheus' conventions: the `linesight_` prefix, base units in the name
//! (`_seconds`, `_bytes`), counters ending in `_total`, labels only for dimensions with few
//! values (task, camera, verdict, device, model), never a part id. Latency is a histogram so p99
//! can be computed over any range and across nodes. `tests/it/http.rs` checks the output with
//! `promtool check metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::stats::{CameraStatus, LinkState, NodeStats};

/// One metric family being written: its HELP and TYPE once, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out }
}

/// A label value: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v}")
    }
}

/// A task's counter, by the field it reads.
type TaskCounter = fn(&crate::stats::TaskStats) -> &AtomicU64;
/// A Modbus device's counter, by the field it reads.
type DeviceCounter = fn(&crate::stats::DeviceStats) -> &AtomicU64;

fn get(a: &AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64
}

/// Every figure of the node, as the exposition text.
pub fn render(s: &NodeStats, ready: bool) -> String {
    let mut out = String::with_capacity(8192);
    family(&mut out, "linesight_build_info", "gauge", "The running linesight version (always 1).").sample(
        "linesight_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    family(&mut out, "linesight_ready", "gauge", "1 once the node inspects (READY sent) and has no active fault.")
        .sample("linesight_ready", &[], if ready && s.faults.list().is_empty() { 1.0 } else { 0.0 });
    family(&mut out, "linesight_uptime_seconds", "gauge", "Seconds since the daemon started.").sample(
        "linesight_uptime_seconds",
        &[],
        s.started.elapsed().as_secs_f64(),
    );
    tasks(&mut out, s);
    cameras(&mut out, s);
    models(&mut out, s);
    modbus(&mut out, s);
    queue_and_faults(&mut out, s);
    machine(&mut out, s);
    process(&mut out);
    out
}

/// The machine health sample (`stats::machine`, every 5 s): CPU per stage, memory, disks,
/// temperatures, the Jetson GPU. A figure the machine does not give is left out.
fn machine(out: &mut String, s: &NodeStats) {
    let m = s.machine.latest();
    let by_stage = m.cpu_by_stage();
    if by_stage.iter().any(|(_, c)| c.is_some()) {
        let mut f = family(
            out,
            "linesight_stage_cpu_cores",
            "gauge",
            "CPU use per stage thread group over the last sample interval, in cores (runtime: telemetry, Modbus, decision and the page together).",
        );
        for (stage, cores) in by_stage {
            if let Some(c) = cores {
                f.sample("linesight_stage_cpu_cores", &[("stage", stage.as_str())], c);
            }
        }
    }
    if let Some(v) = m.memory_total_bytes {
        family(out, "linesight_machine_memory_bytes", "gauge", "MemTotal of the machine (a Jetson's GPU shares it).")
            .sample("linesight_machine_memory_bytes", &[], v as f64);
    }
    if let Some(v) = m.memory_available_bytes {
        family(out, "linesight_machine_memory_available_bytes", "gauge", "MemAvailable of the machine.").sample(
            "linesight_machine_memory_available_bytes",
            &[],
            v as f64,
        );
    }
    let disks: Vec<(&String, u64)> = m.disks.iter().filter_map(|(r, d)| d.free_bytes.map(|b| (r, b))).collect();
    if !disks.is_empty() {
        let mut f = family(
            out,
            "linesight_disk_free_bytes",
            "gauge",
            "Free space on the disk of each directory the node writes.",
        );
        for (role, free) in disks {
            f.sample("linesight_disk_free_bytes", &[("role", role)], free as f64);
        }
    }
    let temps: Vec<(&String, f64)> = m.temperatures_c.iter().filter_map(|(z, t)| t.map(|t| (z, t))).collect();
    if !temps.is_empty() {
        let mut f = family(out, "linesight_temperature_celsius", "gauge", "Thermal zones of the machine, by type.");
        for (zone, t) in temps {
            f.sample("linesight_temperature_celsius", &[("zone", zone)], t);
        }
    }
    if let Some(g) = m.gpu_load {
        family(out, "linesight_gpu_load_ratio", "gauge", "The Jetson GPU's load (0..1, from gpu.0/load).").sample(
            "linesight_gpu_load_ratio",
            &[],
            g,
        );
    }
}

fn tasks(out: &mut String, s: &NodeStats) {
    let mut f = family(out, "linesight_parts_total", "counter", "Parts judged, by task and verdict.");
    for (name, t) in &s.tasks {
        for (verdict, c) in
            [("OK", &t.stats.ok), ("NG", &t.stats.ng), ("UNCERTAIN", &t.stats.uncertain), ("ERROR", &t.stats.error)]
        {
            f.sample("linesight_parts_total", &[("task", name), ("verdict", verdict)], get(c));
        }
    }
    let counters: [(&str, &str, TaskCounter); 6] = [
        (
            "linesight_deadline_misses_total",
            "Parts that reached the gate before their verdict (thrown out for it).",
            |t| &t.deadline_misses,
        ),
        ("linesight_rejects_fired_total", "Reject pulses written and acknowledged.", |t| &t.rejects_fired),
        ("linesight_rejects_failed_total", "Rejects that could not be written (the part may have passed).", |t| {
            &t.rejects_failed
        }),
        ("linesight_late_verdicts_total", "Verdicts that came after their part had been given ERROR.", |t| {
            &t.late_verdicts
        }),
        ("linesight_purges_total", "Times the gate was held in reject after an unclean stop.", |t| &t.purges),
        ("linesight_telemetry_dropped_total", "Results that could not be handed to MQTT.", |t| &t.telemetry_dropped),
    ];
    for (name, help, field) in counters {
        let mut f = family(out, name, "counter", help);
        for (task, t) in &s.tasks {
            f.sample(name, &[("task", task)], get(field(&t.stats)));
        }
    }
    let mut f = family(out, "linesight_task_enabled", "gauge", "1 while the task inspects (commands may disable it).");
    for (task, t) in &s.tasks {
        f.sample("linesight_task_enabled", &[("task", task)], if t.control.enabled() { 1.0 } else { 0.0 });
    }
    let mut f = family(out, "linesight_task_ng_threshold", "gauge", "The task's NG threshold now (0..1).");
    for (task, t) in &s.tasks {
        f.sample("linesight_task_ng_threshold", &[("task", task)], f64::from(t.control.threshold()));
    }
    capture(out, s);
    let name = "linesight_decision_seconds";
    let _ = writeln!(out, "# HELP {name} From capture to the part's verdict.");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (task, t) in &s.tasks {
        let (buckets, sum, count) = t.stats.decision_seconds.snapshot();
        let mut f = Family { out };
        for (le, c) in buckets {
            f.sample(&format!("{name}_bucket"), &[("task", task), ("le", &number(le))], c as f64);
        }
        f.sample(&format!("{name}_sum"), &[("task", task)], sum);
        f.sample(&format!("{name}_count"), &[("task", task)], count as f64);
    }
}

/// Evidence capture, for the tasks that have it.
fn capture(out: &mut String, s: &NodeStats) {
    let tasks: Vec<(&String, &crate::stats::CaptureStats)> =
        s.tasks.iter().filter_map(|(n, t)| Some((n, &**t.capture.as_ref()?))).collect();
    if tasks.is_empty() {
        return;
    }
    type Field = fn(&crate::stats::CaptureStats) -> &AtomicU64;
    let families: [(&str, &str, &str, Field); 6] = [
        ("linesight_capture_written_total", "counter", "Captured parts written (image and sidecar).", |c| &c.written),
        ("linesight_capture_dropped_total", "counter", "Captured parts dropped: the writer's queue was full.", |c| {
            &c.dropped
        }),
        (
            "linesight_capture_deleted_total",
            "counter",
            "Captured parts deleted, oldest first, to stay inside max_bytes and max_files.",
            |c| &c.deleted,
        ),
        (
            "linesight_capture_errors_total",
            "counter",
            "Captured parts that could not be written (disk full, read-only).",
            |c| &c.errors,
        ),
        ("linesight_capture_bytes", "gauge", "Bytes of the task's captured parts on disk.", |c| &c.bytes),
        ("linesight_capture_files", "gauge", "Captured parts (image and sidecar) on disk.", |c| &c.files),
    ];
    for (name, kind, help, field) in families {
        let mut f = family(out, name, kind, help);
        for (task, c) in &tasks {
            f.sample(name, &[("task", task)], get(field(c)));
        }
    }
}

fn cameras(out: &mut String, s: &NodeStats) {
    let cams: Vec<(&str, &crate::stats::CameraStats)> =
        s.tasks.values().map(|t| (t.camera.as_str(), &*t.camera_stats)).collect();
    let mut f = family(out, "linesight_camera_up", "gauge", "1 while the camera delivers new frames (online).");
    for (cam, c) in &cams {
        f.sample("linesight_camera_up", &[("camera", cam)], if c.status() == CameraStatus::Online { 1.0 } else { 0.0 });
    }
    let mut f = family(out, "linesight_camera_frames_total", "counter", "New frames the camera delivered.");
    for (cam, c) in &cams {
        f.sample("linesight_camera_frames_total", &[("camera", cam)], get(&c.frames_in));
    }
    let mut f = family(
        out,
        "linesight_camera_frames_shed_total",
        "counter",
        "Frames not inspected because inspection was behind: `displaced` free-running frames (a newer one took the place), `refused` part frames (their parts got ERROR and the reject).",
    );
    for (cam, c) in &cams {
        f.sample("linesight_camera_frames_shed_total", &[("camera", cam), ("reason", "displaced")], get(&c.dropped));
        f.sample("linesight_camera_frames_shed_total", &[("camera", cam), ("reason", "refused")], get(&c.refused));
    }
    let mut f = family(
        out,
        "linesight_camera_repeated_frames_total",
        "counter",
        "Frames identical to the one before (never inspected).",
    );
    for (cam, c) in &cams {
        f.sample("linesight_camera_repeated_frames_total", &[("camera", cam)], get(&c.repeated));
    }
    let mut f =
        family(out, "linesight_camera_reconnects_total", "counter", "Times the camera was lost and opened again.");
    for (cam, c) in &cams {
        f.sample("linesight_camera_reconnects_total", &[("camera", cam)], get(&c.reconnects));
    }
}

fn models(out: &mut String, s: &NodeStats) {
    let mut f = family(out, "linesight_model_inference_calls_total", "counter", "ONNX Runtime calls (one per batch).");
    for (m, st) in &s.models {
        f.sample("linesight_model_inference_calls_total", &[("model", m)], get(&st.calls));
    }
    let mut f = family(out, "linesight_model_frames_total", "counter", "Frames the model inferred.");
    for (m, st) in &s.models {
        f.sample("linesight_model_frames_total", &[("model", m)], get(&st.frames));
    }
    shadow(out, s);
}

/// Shadow mode: frames a candidate took and skipped, and its agreement with production per task.
fn shadow(out: &mut String, s: &NodeStats) {
    let mut f = family(
        out,
        "linesight_shadow_frames_total",
        "counter",
        "Frames offered to a model's candidate in shadow mode, by outcome (taken, or skipped for want of room).",
    );
    for (m, st) in &s.models {
        let (offered, skipped) = (get(&st.shadow.offered), get(&st.shadow.skipped));
        f.sample("linesight_shadow_frames_total", &[("model", m), ("outcome", "taken")], offered - skipped);
        f.sample("linesight_shadow_frames_total", &[("model", m), ("outcome", "skipped")], skipped);
    }
    let mut f = family(
        out,
        "linesight_shadow_parts_total",
        "counter",
        "Parts judged by both production and the candidate in shadow, by agreement (both_ok, both_ng, production_only_ng, candidate_only_ng, other); reset when a new candidate starts.",
    );
    for (task, t) in &s.tasks {
        for (agreement, n) in t.stats.shadow.counts() {
            f.sample("linesight_shadow_parts_total", &[("task", task), ("agreement", agreement)], n as f64);
        }
    }
    let mut f = family(
        out,
        "linesight_shadow_score_drift",
        "gauge",
        "Mean candidate-minus-production NG score over the parts both judged (NaN before any).",
    );
    for (task, t) in &s.tasks {
        f.sample("linesight_shadow_score_drift", &[("task", task)], t.stats.shadow.drift().unwrap_or(f64::NAN));
    }
}

fn modbus(out: &mut String, s: &NodeStats) {
    let mut f = family(
        out,
        "linesight_modbus_up",
        "gauge",
        "1 while the Modbus device answers (connected or refusing requests), 0 when its link is down.",
    );
    for (d, st) in &s.devices {
        f.sample("linesight_modbus_up", &[("device", d)], if st.state() == LinkState::Down { 0.0 } else { 1.0 });
    }
    let counters: [(&str, &str, DeviceCounter); 4] = [
        ("linesight_modbus_reads_total", "Read requests answered.", |d| &d.reads),
        ("linesight_modbus_writes_total", "Write requests answered.", |d| &d.writes),
        ("linesight_modbus_failures_total", "Requests that failed (timeout, broken link).", |d| &d.failures),
        ("linesight_modbus_exceptions_total", "Requests the device refused with a Modbus exception.", |d| &d.refusals),
    ];
    for (name, help, field) in counters {
        let mut f = family(out, name, "counter", help);
        for (d, st) in &s.devices {
            f.sample(name, &[("device", d)], get(field(st)));
        }
    }
    if let Some(beats) = &s.heartbeats {
        family(out, "linesight_heartbeats_total", "counter", "Heartbeat writes the PLC acknowledged.").sample(
            "linesight_heartbeats_total",
            &[],
            get(beats),
        );
    }
}

fn queue_and_faults(out: &mut String, s: &NodeStats) {
    if let Some(q) = s.mqtt_queue.as_ref().filter(|q| q.configured.load(Ordering::Relaxed)) {
        family(
            out,
            "linesight_mqtt_queue_messages",
            "gauge",
            "Messages in the MQTT disk queue, waiting for the broker.",
        )
        .sample("linesight_mqtt_queue_messages", &[], get(&q.waiting));
        family(out, "linesight_mqtt_queue_dropped_total", "counter", "Messages the full queue dropped (its policy).")
            .sample("linesight_mqtt_queue_dropped_total", &[], get(&q.dropped));
        family(out, "linesight_mqtt_queue_lost_total", "counter", "Messages lost to a damaged queue file.").sample(
            "linesight_mqtt_queue_lost_total",
            &[],
            get(&q.lost),
        );
        family(
            out,
            "linesight_mqtt_live_total",
            "counter",
            "Messages sent live, without the queue (its disk refused them).",
        )
        .sample("linesight_mqtt_live_total", &[], get(&q.live));
    }
    let active = s.faults.list();
    family(out, "linesight_faults_active", "gauge", "Active faults (each is also a linesight_fault series).").sample(
        "linesight_faults_active",
        &[],
        active.len() as f64,
    );
    let mut f = family(out, "linesight_fault", "gauge", "1 for each active fault, named as in the MQTT alarms.");
    for fault in &active {
        f.sample("linesight_fault", &[("fault", fault)], 1.0);
    }
    family(
        out,
        "linesight_config_generation",
        "gauge",
        "The config generation parts are stamped with (one more per applied reload).",
    )
    .sample("linesight_config_generation", &[], get(&s.reloads.generation));
}

/// The process figures Prometheus' client libraries export under these names, from `/proc`.
fn process(out: &mut String) {
    let Some(p) = ProcSelf::read() else { return };
    family(out, "process_cpu_seconds_total", "counter", "User and system CPU time of the process.").sample(
        "process_cpu_seconds_total",
        &[],
        p.cpu_seconds,
    );
    family(out, "process_resident_memory_bytes", "gauge", "Resident memory of the process.").sample(
        "process_resident_memory_bytes",
        &[],
        p.rss_bytes,
    );
    family(out, "process_open_fds", "gauge", "Open file descriptors of the process.").sample(
        "process_open_fds",
        &[],
        p.open_fds,
    );
    family(out, "process_threads", "gauge", "Threads of the process.").sample("process_threads", &[], p.threads);
}

struct ProcSelf {
    cpu_seconds: f64,
    rss_bytes: f64,
    open_fds: f64,
    threads: f64,
}

impl ProcSelf {
    fn read() -> Option<ProcSelf> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces, inside parentheses).
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name and state.
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        let threads = f.get(17)?.parse().ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let rss_kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as f64).unwrap_or(0.0);
        // USER_HZ is 100 on every Linux this runs on (the kernel ABI fixes it for /proc).
        Some(ProcSelf { cpu_seconds: ticks / 100.0, rss_bytes: rss_kb * 1024.0, open_fds, threads })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_are_prometheus_numbers() {
        assert_eq!(escape(r#"camera "top" \ 2"#), r#"camera \"top\" \\ 2"#);
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(0.005), "0.005");
        assert_eq!(number(3.0), "3");
    }

    #[test]
    fn a_family_has_help_type_and_samples() {
        let mut out = String::new();
        family(&mut out, "x_total", "counter", "Things.").sample("x_total", &[("task", "a")], 2.0).sample(
            "x_total",
            &[("task", "b\"")],
            0.0,
        );
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{task=\"a\"} 2\nx_total{task=\"b\\\"\"} 0\n"
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let p = ProcSelf::read().expect("/proc/self");
        assert!(p.rss_bytes > 0.0 && p.threads >= 1.0 && p.open_fds >= 1.0);
    }
}
