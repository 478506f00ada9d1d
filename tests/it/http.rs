//! The operator page's server against the real daemon on the sample video (issue 15): health
//! and readiness, `/metrics` checked by `promtool check metrics` (Debian's `prometheus`), the
//! status document, the live view and the reject gallery as JPEGs, and every refusal of an
//! action: no token, a wrong token, a read-only page, a command outside the task's limits, a
//! replayed id, the page's action rate. Each refusal is an audit line; an accepted command acts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use linesight::sim::plc::SimPlc;

/// One HTTP/1.1 request on a fresh connection: (status, headers, body).
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the page's port accepts");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // Read the head, then the body by its Content-Length (chromedriver keeps the connection
    // open whatever the request asked), else to the end.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed before a response head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    let length = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let mut body = raw[split + 4..].to_vec();
    match length {
        Some(n) => {
            while body.len() < n {
                let got = s.read(&mut buf).unwrap();
                assert!(got > 0, "the connection closed inside the body");
                body.extend_from_slice(&buf[..got]);
            }
            body.truncate(n);
        }
        None => {
            s.read_to_end(&mut body).unwrap();
        }
    }
    (status, head, body)
}

pub fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let (status, _, body) = request(port, "GET", path, &[], b"");
    (status, body)
}

fn json(port: u16, path: &str) -> Value {
    let (status, body) = get(port, path);
    assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn post(port: u16, token: Option<&str>, body: &str) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let (status, _, body) = request(port, "POST", "/api/command", &headers, body.as_bytes());
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Wait until `f` holds, or fail with what the log says.
fn until(what: &str, log: &std::path::Path, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "{what}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
}

const TOKEN: &str = "test-token-0123456789abcdef";

/// The node of the other tests with the page on a free port (and a token, when `token`).
pub fn page_yaml(plc: &str, dir: &std::path::Path, token: bool) -> (String, u16) {
    let port = linesight::sim::broker::free_port().unwrap();
    let token_line = if token {
        let path = dir.join("token");
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        format!("  token_file: {}\n", path.display())
    } else {
        String::new()
    };
    // Without MQTT: the page does not need a broker.
    let yaml: String = node_yaml(plc, 1, "loop: true", 10.0)
        .lines()
        .filter(|l| !l.starts_with("mqtt:"))
        .map(|l| format!("{l}\n"))
        .collect();
    (format!("{yaml}http:\n  listen: 127.0.0.1:{port}\n{token_line}"), port)
}

#[test]
fn the_page_serves_metrics_live_frames_rejects_and_refuses_what_it_must() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (yaml, port) = page_yaml(&plc.addr.to_string(), dir.path(), true);
    assert!(!yaml.contains("mqtt:"), "a node without MQTT still has its page:\n{yaml}");
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut child = run_daemon(&cfg, &log);

    until("the page answers /healthz", &log, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/healthz").0 == 200
    });
    until("ready", &log, || get(port, "/readyz").0 == 200);
    let (status, page) = get(port, "/");
    assert_eq!(status, 200);
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("<title>linesight</title>") && page.contains("/api/events"));
    assert!(!page.contains("http://") && !page.contains("https://"), "no CDN: everything from the binary");

    // Parts flow: counts grow, the live view moves, rejected parts are kept with their images.
    let first = json(port, "/api/status");
    assert_eq!(first["node"], "test-line/cell-1");
    assert_eq!(first["ready"], true, "{first}");
    until("counts grow and rejects are kept", &log, || {
        let s = json(port, "/api/status");
        s["tasks"]["inspect"]["processed"].as_u64() > first["tasks"]["inspect"]["processed"].as_u64()
            && s["rejects_head"].is_u64()
            && s["live"]["top"]["seq"].is_u64()
    });
    let a = json(port, "/api/status")["live"]["top"]["seq"].as_u64().unwrap();
    until("the live view moves on", &log, || json(port, "/api/status")["live"]["top"]["seq"].as_u64().unwrap() > a);
    let (status, jpeg) = get(port, "/api/live/top");
    assert_eq!(status, 200);
    assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
    assert_eq!(get(port, "/api/live/nowhere").0, 404);
    let rejects = json(port, "/api/rejects");
    let kept = rejects.as_array().unwrap();
    assert!(!kept.is_empty());
    for r in kept {
        assert_ne!(r["verdict"], "OK", "{r}");
        assert!(r["model"].as_str().unwrap().starts_with("surface-classifier@"), "{r}");
        assert!(r["threshold"].as_f64().unwrap() > 0.0 && r["scores"].as_array().unwrap().len() >= 2, "{r}");
    }
    let (status, jpeg) = get(port, &format!("/api/rejects/{}", kept[0]["seq"]));
    assert_eq!((status, &jpeg[..2]), (200, &[0xFF, 0xD8][..]));

    // Prometheus: promtool accepts the exposition, and the figures are there.
    let (status, metrics) = get(port, "/metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(metrics).unwrap();
    promtool_check(&text);
    for needle in [
        "linesight_parts_total{task=\"inspect\",verdict=\"NG\"}",
        "linesight_decision_seconds_bucket{task=\"inspect\",le=\"+Inf\"}",
        "linesight_camera_up{camera=\"top\"} 1",
        "linesight_modbus_up{device=\"plc\"} 1",
        "linesight_ready 1",
        "process_resident_memory_bytes",
        "linesight_disk_free_bytes{role=\"state_dir\"}",
        "linesight_machine_memory_available_bytes",
    ] {
        assert!(text.contains(needle), "`{needle}` in /metrics:\n{text}");
    }

    // Every metric the Grafana dashboard queries is one this node exports. A few only exist on
    // some machines or configs (a Jetson's GPU, thermal zones, an MQTT disk queue) or after the
    // machine sampler's second sample (CPU per stage, 5 s in): those must at least be names
    // /metrics can write, so a typo still fails.
    let dashboard = std::fs::read_to_string(repo().join("dashboards/grafana/linesight.json")).unwrap();
    let source = std::fs::read_to_string(repo().join("src/http/metrics.rs")).unwrap();
    let conditional = [
        "linesight_gpu_load_ratio",
        "linesight_temperature_celsius",
        "linesight_mqtt_queue_",
        "linesight_stage_cpu_cores",
    ];
    let doc: Value = serde_json::from_str(&dashboard).unwrap();
    let mut queried = 0;
    for panel in doc["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| (w.starts_with("linesight_") || w.starts_with("process_")) && !w.is_empty())
            {
                queried += 1;
                let family = name.strip_suffix("_bucket").unwrap_or(name);
                if conditional.iter().any(|c| family.starts_with(c)) {
                    assert!(
                        source.contains(&format!("\"{family}\"")),
                        "`{name}` (in panel {}) is not a metric",
                        panel["title"]
                    );
                } else {
                    assert!(
                        text.lines().any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])),
                        "the dashboard's panel {} queries `{name}`, which /metrics does not export",
                        panel["title"]
                    );
                }
            }
        }
    }
    assert!(queried >= 20, "{queried} metric names in the dashboard's queries");

    // Actions: refused without the token, with a wrong one, outside the limits, replayed.
    let (status, a) = post(port, None, r#"{"id":"h1","command":"reload"}"#);
    assert_eq!(status, 401, "{a}");
    assert!(a["error"].as_str().unwrap().contains("needs the token"), "{a}");
    assert_eq!(post(port, Some("wrong-token-0123456789"), r#"{"id":"h2","command":"reload"}"#).0, 401);
    let (status, a) =
        post(port, Some(TOKEN), r#"{"id":"h3","command":"set-threshold","task":"inspect","threshold":0.99}"#);
    assert_eq!(status, 422, "{a}");
    assert!(a["error"].as_str().unwrap().contains("by command"), "the task's command limits: {a}");
    let (status, a) =
        post(port, Some(TOKEN), r#"{"id":"h4","command":"set-threshold","task":"inspect","threshold":0.6}"#);
    assert_eq!((status, &a["ok"]), (200, &Value::Bool(true)), "{a}");
    assert_eq!(json(port, "/api/status")["tasks"]["inspect"]["ng_threshold"], 0.6, "the command acted");
    let (status, a) =
        post(port, Some(TOKEN), r#"{"id":"h4","command":"set-threshold","task":"inspect","threshold":0.6}"#);
    assert_eq!(status, 422);
    assert!(a["error"].as_str().unwrap().contains("replay"), "{a}");
    assert_eq!(post(port, Some(TOKEN), "not json").0, 422);
    // The page's action rate: 20 a minute, good token or bad (6 used above).
    let codes: Vec<u16> = (0..16)
        .map(|i| post(port, Some("guess-0123456789abcdef"), &format!(r#"{{"id":"g{i}","command":"reload"}}"#)).0)
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 401).count(), 14, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 2, "{codes:?}");

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success(), "{}", logs());
    let text = logs();
    let audited = text.lines().filter(|l| l.contains("linesight::audit") && l.contains("command refused")).count();
    // no token, wrong token, limits, replay, not JSON, and the 16 guesses
    assert_eq!(audited, 21, "every refusal is an audit line:\n{text}");
    assert!(text.lines().any(|l| l.contains("linesight::audit") && l.contains("command executed")));
}

#[test]
fn without_a_token_file_the_page_is_read_only_and_a_readable_token_is_refused() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // A token file others can read: check-config refuses it (exit 78), naming the fix.
    let (yaml, _) = page_yaml(&plc.addr.to_string(), dir.path(), true);
    std::fs::set_permissions(dir.path().join("token"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let cfg = write_config(dir.path(), &yaml);
    let out = Command::new(bin()).arg("check-config").arg(&cfg).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("http.token_file") || stderr.contains("token_file"), "{stderr}");
    assert!(stderr.contains("others can read the token") && stderr.contains("chmod 600"), "{stderr}");

    let (yaml, port) = page_yaml(&plc.addr.to_string(), dir.path(), false);
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    until("ready", &log, || TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/readyz").0 == 200);
    assert_eq!(json(port, "/api/status")["actions"], false);
    let (status, a) = post(port, Some(TOKEN), r#"{"id":"r1","command":"reload"}"#);
    assert_eq!(status, 403, "{a}");
    assert!(a["error"].as_str().unwrap().contains("read-only"), "{a}");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn the_page_serves_https_with_its_own_certificate() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    test_certs(dir.path());
    let (yaml, port) = page_yaml(&plc.addr.to_string(), dir.path(), false);
    let tls = format!(
        "{yaml}  tls: {{ cert: {}, key: {} }}\n",
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display()
    );

    // A missing key is a config error, named.
    let broken = write_config(dir.path(), &tls.replace("server.key", "nowhere.key"));
    let out = Command::new(bin()).arg("check-config").arg(&broken).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("http.tls.key") && stderr.contains("nowhere.key"), "{stderr}");

    let cfg = write_config(dir.path(), &tls);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(extra)
            .arg(format!("https://127.0.0.1:{port}/healthz"))
            .output()
            .unwrap()
    };
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    until("the page answers over HTTPS", &log, || {
        let o = curl(&["--cacert", ca]);
        o.status.success() && o.stdout == b"ok\n"
    });
    assert!(!curl(&[]).status.success(), "a client that does not trust the CA refuses the page");
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "10", &format!("http://127.0.0.1:{port}/healthz")])
        .output()
        .unwrap();
    assert!(!plain.status.success() || plain.stdout != b"ok\n", "no plain HTTP on a TLS page");
    // The page still serves after a failed handshake.
    let o = curl(&["--cacert", ca]);
    assert!(o.status.success() && o.stdout == b"ok\n");
    assert!(std::fs::read_to_string(&log).unwrap().contains("operator page at https://"));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn alarms_have_a_history_and_are_acknowledged_once_with_the_token() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    // No PLC on this port: the Modbus device is unreachable, an alarm.
    let (yaml, port) = page_yaml("127.0.0.1:1", dir.path(), true);
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    until("an alarm in the history", &log, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
            && json(port, "/api/alarms")
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["text"].as_str().unwrap().contains("plc")))
    });
    let alarm = json(port, "/api/alarms")
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["text"].as_str().unwrap().contains("plc"))
        .unwrap()
        .clone();
    assert!(alarm["started"].is_string() && alarm["ended"].is_null() && alarm["acknowledged"].is_null(), "{alarm}");
    let path = format!("/api/alarms/{}/ack", alarm["id"]);
    let ack = |token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let (status, _, body) = request(port, "POST", &path, &headers, br#"{"by": "Ana (shift B)"}"#);
        (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
    };
    assert_eq!(ack(None).0, 401);
    let (status, a) = ack(Some(TOKEN));
    assert_eq!((status, &a["ok"]), (200, &Value::Bool(true)), "{a}");
    let (status, a) = ack(Some(TOKEN));
    assert_eq!(status, 422);
    assert!(a["error"].as_str().unwrap().contains("already acknowledged by Ana (shift B) (http 127.0.0.1:"), "{a}");
    let after = json(port, "/api/alarms");
    let kept = after.as_array().unwrap().iter().find(|r| r["id"] == alarm["id"]).unwrap();
    assert!(kept["acknowledged"]["by"].as_str().unwrap().starts_with("Ana (shift B)"), "{kept}");
    assert!(kept["acknowledged"]["at"].is_string());
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    wait_exit(&mut child, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().any(|l| l.contains("linesight::audit") && l.contains("alarm acknowledged")), "{text}");
    assert_eq!(text.lines().filter(|l| l.contains("alarm acknowledgement refused")).count(), 2, "{text}");
}

/// An anomaly model's part on the page: its heat map drawn over the frame. The picture of an NG
/// part has the map's colours (the samples are grey: any strongly coloured pixel is the map's);
/// `LINESIGHT_SCREENSHOTS=docs/images` keeps it for the docs.
#[test]
fn an_anomaly_models_rejects_show_its_heat_map() {
    use opencv::prelude::*;
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = repo();
    let (yaml, port) = page_yaml(&plc.addr.to_string(), dir.path(), false);
    let yaml = yaml
        .replace(
            &format!("file: {}", repo.join("samples/line.avi").display()),
            &format!("directory: {}", repo.join("models/surface-anomaly-samples").display()),
        )
        .replace(
            &repo.join("models/surface-classifier.onnx").display().to_string(),
            &repo.join("models/surface-anomaly.onnx").display().to_string(),
        );
    assert!(yaml.contains("surface-anomaly.onnx") && yaml.contains("directory:"), "{yaml}");
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let _child = run_daemon(&cfg, &log);
    until("an anomaly NG part is kept", &log, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
            && get(port, "/api/rejects").0 == 200
            && json(port, "/api/rejects").as_array().is_some_and(|a| a.iter().any(|r| r["verdict"] == "NG"))
    });
    let rejects = json(port, "/api/rejects");
    let ng = rejects.as_array().unwrap().iter().find(|r| r["verdict"] == "NG").unwrap().clone();
    assert!(ng["model"].as_str().unwrap().contains("anomaly"), "{ng}");
    let (status, bytes) = get(port, &format!("/api/rejects/{}", ng["seq"]));
    assert_eq!(status, 200);
    let img = opencv::imgcodecs::imdecode(&opencv::core::Vector::from_slice(&bytes), opencv::imgcodecs::IMREAD_COLOR)
        .unwrap();
    // Below the verdict band (28 px), count pixels far from grey.
    let mut coloured = 0usize;
    for y in 28..img.rows() {
        for x in 0..img.cols() {
            let p = img.at_2d::<opencv::core::Vec3b>(y, x).unwrap().0;
            let (lo, hi) = (p.iter().min().unwrap(), p.iter().max().unwrap());
            if hi - lo > 60 {
                coloured += 1;
            }
        }
    }
    let share = coloured as f64 / f64::from((img.rows() - 28) * img.cols());
    assert!(share > 0.01, "an NG part's picture shows the heat map: {:.4} of its pixels are coloured ({ng})", share);
    if let Some(out) = std::env::var_os("LINESIGHT_SCREENSHOTS") {
        let png = std::path::Path::new(&out).join("live-anomaly-heat-map.png");
        assert!(opencv::imgcodecs::imwrite_def(png.to_str().unwrap(), &img).unwrap());
    }
}
