//! Evidence capture against the real daemon: the sample video through ONNX Runtime on the
//! committed classifier, a simulated PLC, a real mosquitto. Every NG part's image and sidecar
//! are on disk with the right verdict and model fields, OK parts are sampled 1 in 5, the figures
//! are published; `linesight capture export` writes each layout from that store; a `mark-part`
//! over MQTT (to a second run of the daemon on the same store) changes the export's label.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use linesight::sim::plc::SimPlc;
use serde_json::Value;

const BASE: &str = "linesight/test-line/cell-1";

fn capture_yaml(plc: &str, port: u16, fps: f64, store: &Path) -> String {
    let base = node_yaml(plc, port, "", fps);
    let capture =
        format!("    capture: {{ dir: \"{}\", ok_every: 5, max_bytes: 500 MB, queue: 16 }}\n", store.display());
    format!("{base}{capture}")
}

/// Every sidecar under `store/inspect`, by part id.
fn sidecars(store: &Path) -> BTreeMap<u64, (PathBuf, Value)> {
    let mut out = BTreeMap::new();
    for day in std::fs::read_dir(store.join("inspect")).unwrap() {
        for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            assert_ne!(p.extension().and_then(|e| e.to_str()), Some("tmp"), "no temp file left: {}", p.display());
            if p.extension().and_then(|e| e.to_str()) == Some("json") {
                let doc: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                out.insert(doc["part_id"].as_u64().unwrap(), (p, doc));
            }
        }
    }
    out
}

fn export(store: &Path, format: &str, out: &Path, extra: &[&str]) -> String {
    let o = Command::new(bin())
        .args(["capture", "export", "--capture"])
        .arg(store)
        .args(["--format", format, "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "export {format} failed: {text} {}", String::from_utf8_lossy(&o.stderr));
    text
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn parts_are_captured_exported_and_marked() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/#");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("capture");

    // Run 1: the whole video, then the daemon ends.
    let cfg = write_config(dir.path(), &capture_yaml(&plc.addr.to_string(), broker.port, 10.0, &store));
    let mut child = run_daemon(&cfg, &dir.path().join("daemon.log"));
    let status = wait_exit(&mut child, Duration::from_secs(90));
    assert!(status.success(), "linesight exited with {status}");
    let ended = linesight::util::time::rfc3339(std::time::SystemTime::now());
    assert!(sub.wait_for(|t, p| t.ends_with("/availability") && p == "offline", Duration::from_secs(5)));

    let labels = labels();
    let results = sub.messages("/tasks/inspect/result");
    assert_eq!(results.len(), labels.len());
    let ng: Vec<u64> =
        results.iter().filter(|r| r["verdict"] == "NG").map(|r| r["part_id"].as_u64().unwrap()).collect();
    let ok_parts = results.len() - ng.len();
    let kept = sidecars(&store);
    for id in &ng {
        let (path, doc) = kept.get(id).unwrap_or_else(|| panic!("NG part {id} not captured"));
        assert_eq!(doc["verdict"], "NG", "{doc}");
        assert_eq!(doc["reason"], "ng");
        assert_eq!(doc["task"], "inspect");
        assert_eq!(doc["camera"], "top");
        assert_eq!(doc["model"]["sha256"].as_str().map(str::len), Some(64), "{doc}");
        assert!(doc["model"]["name"].is_string() && doc["model"]["version"].is_string(), "{doc}");
        assert!(doc["ng_threshold"].as_f64().unwrap() > 0.0);
        assert!(doc["ng_score"].as_f64().unwrap() >= doc["ng_threshold"].as_f64().unwrap());
        assert_eq!(doc["config_hash"].as_str().map(str::len), Some(16));
        assert!(doc["ng_class"].is_string(), "a classifier's NG part has a defect class: {doc}");
        let image = path.with_file_name(doc["image"].as_str().unwrap());
        let m = opencv::imgcodecs::imread(image.to_str().unwrap(), opencv::imgcodecs::IMREAD_COLOR).unwrap();
        use opencv::prelude::MatTraitConst;
        assert_eq!(
            (m.cols() as u64, m.rows() as u64),
            (doc["width"].as_u64().unwrap(), doc["height"].as_u64().unwrap())
        );
    }
    let oks: Vec<&Value> = kept.values().map(|(_, d)| d).filter(|d| d["verdict"] == "OK").collect();
    assert_eq!(oks.len(), ok_parts / 5, "OK parts sampled 1 in 5");
    assert!(oks.iter().all(|d| d["reason"] == "ok-sample"));
    assert_eq!(kept.len(), ng.len() + ok_parts / 5, "nothing else kept");

    let last = sub.messages("/stats").into_iter().find(|s| s["final"] == true).expect("final stats");
    let c = &last["tasks"]["inspect"]["capture"];
    assert_eq!(c["written"], kept.len(), "{c}");
    assert_eq!(c["files"], kept.len(), "{c}");
    assert_eq!((c["dropped"].as_u64(), c["errors"].as_u64(), c["deleted"].as_u64()), (Some(0), Some(0), Some(0)));

    // Each layout from the store.
    let out = dir.path().join("out");
    let text = export(&store, "imagefolder", &out.join("if"), &[]);
    let classes: Vec<String> = std::fs::read_dir(out.join("if"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(count(&out.join("if/good")), ok_parts / 5, "{text}");
    let defects: usize = classes.iter().filter(|c| *c != "good").map(|c| count(&out.join("if").join(c))).sum();
    assert_eq!(defects, ng.len(), "{text}");
    assert!(text.contains("good"), "counts per label printed: {text}");

    // The store's folder from the node's config instead of --capture.
    let o = Command::new(bin())
        .args(["capture", "export", "--config"])
        .arg(&cfg)
        .args(["--task", "inspect", "--format", "imagefolder", "--verdict", "ok", "--out"])
        .arg(out.join("by-config"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(count(&out.join("by-config/good")), ok_parts / 5);
    assert_eq!(count(&out.join("by-config")), 1, "--verdict ok: only good parts");
    let o = Command::new(bin())
        .args(["capture", "export", "--capture"])
        .arg(&store)
        .args(["--format", "coco", "--out"])
        .arg(out.join("x"))
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("unknown export format `coco`"));

    export(&store, "anomalib", &out.join("an"), &[]);
    assert_eq!((count(&out.join("an/good")), count(&out.join("an/defect"))), (ok_parts / 5, ng.len()));

    export(&store, "yolo", &out.join("yolo"), &[]);
    assert_eq!(count(&out.join("yolo/images")), kept.len());
    assert_eq!(count(&out.join("yolo/labels")), kept.len());
    for f in std::fs::read_dir(out.join("yolo/labels")).unwrap() {
        for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            assert_eq!(v.len(), 5);
            assert!(v[1..].iter().all(|x| (0.0..=1.0).contains(x)), "{line}");
        }
    }
    let data = std::fs::read_to_string(out.join("yolo/data.yaml")).unwrap();
    assert!(data.contains("names:") && data.contains("train: images"), "{data}");

    export(&store, "label-studio", &out.join("ls"), &["--verdict", "NG"]);
    let tasks: Vec<Value> = serde_json::from_slice(&std::fs::read(out.join("ls/label-studio.json")).unwrap()).unwrap();
    assert_eq!(tasks.len(), ng.len(), "--verdict NG");
    assert!(tasks.iter().all(|t| t["predictions"][0]["result"].as_array().is_some_and(|r| !r.is_empty())));
    assert!(tasks.iter().all(|t| out.join("ls").join(t["data"]["image"].as_str().unwrap()).exists()));

    // Run 2, slow (a frame every 5 s), on the same store: mark part `target` of run 1.
    let target = *ng.last().unwrap();
    let cfg = write_config(dir.path(), &capture_yaml(&plc.addr.to_string(), broker.port, 0.2, &store));
    let _daemon = run_daemon(&cfg, &dir.path().join("daemon2.log"));
    // Run 1 said `online` too: wait for run 2's (the second).
    let onlines = || sub.raw("/availability").iter().filter(|p| p.as_str() == "online").count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while onlines() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(onlines(), 2, "run 2 online: {:?}", sub.raw("/availability"));
    let now = linesight::util::time::now_ms();
    let mark = |id: &str, part: u64| {
        format!(
            r#"{{"id":"{id}","ts":{now},"command":"mark-part","task":"inspect","part_id":{part},"mark":"false-reject"}}"#
        )
    };
    let mut pubc = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", &format!("{BASE}/commands"), "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = pubc.stdin.take().unwrap();
    writeln!(stdin, "{}", mark("m1", target)).unwrap();
    writeln!(stdin, "{}", mark("m2", 999_999)).unwrap();
    drop(stdin);
    assert!(pubc.wait().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let answer = |id: &str| sub.messages("/commands/response").into_iter().find(|a| a["id"] == id);
    while (answer("m1").is_none() || answer("m2").is_none()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(answer("m1").expect("answer to m1")["ok"], true, "{:?}", answer("m1"));
    let refused = answer("m2").expect("answer to m2");
    assert!(refused["error"].as_str().unwrap().contains("part 999999"), "{refused}");

    let doc = &sidecars(&store)[&target].1;
    assert_eq!(doc["review"]["mark"], "false-reject", "{doc}");
    assert!(doc["review"]["by"].as_str().unwrap().ends_with("/commands"), "{doc}");
    // Run 1's records only: run 2 may have captured its first parts meanwhile.
    let until = ["--until", ended.as_str()];
    export(&store, "anomalib", &out.join("an2"), &until);
    assert_eq!(
        (count(&out.join("an2/good")), count(&out.join("an2/defect"))),
        (ok_parts / 5 + 1, ng.len() - 1),
        "the mark overrides the verdict"
    );
    export(&store, "imagefolder", &out.join("marked"), &["--marked-only"]);
    assert_eq!(count(&out.join("marked/good")), 1);
}

/// The operator page of a capturing node: its gallery comes from the store (with each part's key
/// and review mark), a kept part's picture is drawn from disk, a mark needs the token and lands
/// in the sidecar, and `/metrics` has the capture figures (promtool accepts them).
#[test]
fn the_page_shows_the_store_and_marks_parts() {
    use crate::http::{get, page_yaml, request};
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("capture");
    let (yaml, port) = page_yaml(&plc.addr.to_string(), dir.path(), true);
    let capture = format!("    capture: {{ dir: \"{}\", queue: 16 }}\nhttp:\n", store.display());
    let yaml = yaml.replacen("\nhttp:\n", &format!("\n{capture}"), 1);
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let _daemon = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(60);
    let gallery = loop {
        let list: Value = match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(_) => serde_json::from_slice(&get(port, "/api/rejects").1).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if list.as_array().is_some_and(|a| !a.is_empty()) {
            break list;
        }
        assert!(Instant::now() < deadline, "no gallery from the store:\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    let first = &gallery[0];
    let key = first["key"].as_str().unwrap_or_else(|| panic!("a stored part has a key: {first}"));
    assert!(first["seq"].is_null() && first["review"].is_null(), "{first}");
    assert!(key.starts_with("inspect/"), "{key}");
    let path = |k: &str| format!("/api/captured/{}", k.replace('/', "%2F"));
    let (status, jpeg) = get(port, &path(key));
    assert_eq!((status, &jpeg[..2]), (200, &[0xFF, 0xD8][..]), "{}", String::from_utf8_lossy(&jpeg));
    assert_eq!(get(port, &path("inspect/../../etc/passwd")).0, 404, "a key is looked up, never joined into a path");

    let part_id = first["part_id"].as_u64().unwrap();
    let body = format!(r#"{{"task":"inspect","part_id":{part_id},"mark":"defect","by":"ann"}}"#);
    let mark = |token: Option<&str>, body: &str| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let (status, _, answer) = request(port, "POST", "/api/mark", &headers, body.as_bytes());
        (status, serde_json::from_slice::<Value>(&answer).unwrap_or(Value::Null))
    };
    assert_eq!(mark(None, &body).0, 401, "a mark needs the token");
    let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
    let (status, answer) = mark(Some(token.trim()), &body);
    assert_eq!(status, 200, "{answer}");
    let (status, answer) =
        mark(Some(token.trim()), &format!(r#"{{"task":"inspect","part_id":{part_id},"mark":"maybe"}}"#));
    assert_eq!(status, 422);
    assert!(answer["error"].as_str().unwrap().contains("false-reject, missed-defect, good, defect"), "{answer}");
    // The sidecar holds the mark (the newest record of the part: the looping video repeats ids
    // only after the whole sample, which this test does not wait for).
    let list: Value = serde_json::from_slice(&get(port, "/api/rejects").1).unwrap();
    let marked = list.as_array().unwrap().iter().find(|r| r["key"] == key).expect("still in the gallery");
    assert_eq!(marked["review"]["mark"], "defect", "{marked}");
    assert!(marked["review"]["by"].as_str().unwrap().starts_with("ann (http 127.0.0.1:"), "{marked}");
    assert!(logs().contains("linesight::audit"), "the mark is audited");

    let (status, metrics) = get(port, "/metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(metrics).unwrap();
    assert!(text.contains("linesight_capture_written_total{task=\"inspect\"}"), "{text}");
    promtool_check(&text);
}

/// A detector's boxes become YOLO pre-labels: one line per detection of each NG record, in the
/// model's class order, normalised to the full frame (the camera decodes at reduced size).
#[test]
fn a_detectors_boxes_become_yolo_pre_labels() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let repo = repo();
    let store = dir.path().join("capture");
    // No PLC, no broker: a node that only inspects and keeps its evidence.
    let yaml = format!(
        r#"node: {{ group_id: test-line, node_id: cell-det }}
cameras:
  top:
    source: {{ file: {video} }}
    fps: 20
models:
  det:
    path: {model}
    providers: [ {{ cpu: {{ threads: 1 }} }} ]
tasks:
  inspect:
    camera: top
    model: det
    capture: {{ dir: "{store}", error: false, uncertain: false }}
"#,
        video = repo.join("samples/line.avi").display(),
        model = repo.join("models/surface-detector.onnx").display(),
        store = store.display(),
    );
    let cfg = write_config(dir.path(), &yaml);
    let mut child = run_daemon(&cfg, &dir.path().join("daemon.log"));
    assert!(wait_exit(&mut child, Duration::from_secs(90)).success());
    let kept = sidecars(&store);
    assert!(!kept.is_empty());
    let out = dir.path().join("yolo");
    export(&store, "yolo", &out, &[]);
    let data = std::fs::read_to_string(out.join("data.yaml")).unwrap();
    let (_, first) = kept.values().next().unwrap();
    let classes: Vec<&str> = first["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for (i, c) in classes.iter().enumerate() {
        assert!(data.contains(&format!("  {i}: \"{c}\"")), "the model's class order: {data}");
    }
    let mut boxes = 0;
    for (path, doc) in kept.values() {
        assert_eq!(doc["verdict"], "NG", "only NG parts kept: {doc}");
        let dets = doc["detections"].as_array().unwrap();
        let day = path.parent().unwrap().file_name().unwrap().to_str().unwrap();
        let name = format!("inspect-{day}-{}", path.with_extension("txt").file_name().unwrap().to_str().unwrap());
        let text = std::fs::read_to_string(out.join("labels").join(&name)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), dets.len(), "{name}: one pre-label per detection");
        let full_w = doc["width"].as_f64().unwrap() * doc["image_scale"].as_f64().unwrap();
        for (line, d) in lines.iter().zip(dets) {
            let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            assert_eq!(classes[v[0] as usize], d["class"].as_str().unwrap(), "{line} vs {d}");
            let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert!((v[1] - (b[0] + b[2]) / 2.0 / full_w).abs() < 1e-4, "centre x in the full frame: {line} vs {d}");
            assert!((v[3] - (b[2] - b[0]) / full_w).abs() < 1e-4, "width: {line} vs {d}");
            boxes += 1;
        }
    }
    assert!(boxes > 0, "the detector found defects in the sample");
}
