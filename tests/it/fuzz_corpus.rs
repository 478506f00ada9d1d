//! The fuzz corpora, replayed on the stable toolchain (reliability.md item 12).
//!
//! Every file committed under `fuzz/corpus/<target>/` (what the fuzzer found interesting, minimized)
//! and `fuzz/regressions/<target>/` (inputs that once crashed linesight) goes through the same
//! function the fuzz target runs (`fuzz/src/lib.rs`, included here). A parser that panics, or
//! breaks an invariant the target checks, on any of them fails this test, naming the file; the
//! fuzzing itself (`scripts/fuzz.sh`) needs cargo-fuzz and takes minutes per target.
//!
//! `write_seeds` (ignored) writes the seed inputs the corpora were grown from, made from the
//! repository's real files and linesight's own encoders: configs, commands, MQTT packets, Modbus
//! frames, model metadata, sidecars, a queue written by the store.

use std::path::{Path, PathBuf};

use crate::common::repo;

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn every_corpus_and_regression_file_passes_its_target() {
    let fuzz = repo().join("fuzz");
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, target) in targets::TARGETS {
        let corpus = files(&fuzz.join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ is empty: every target's corpus is committed");
        for file in corpus.iter().chain(files(&fuzz.join("regressions").join(name)).iter()) {
            let data = std::fs::read(file).unwrap();
            total += 1;
            if let Err(panic) = std::panic::catch_unwind(|| target(&data)) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: {why}", file.strip_prefix(&fuzz).unwrap_or(file).display()));
            }
        }
    }
    eprintln!("{total} corpus and regression files replayed through {} targets", targets::TARGETS.len());
    assert!(failures.is_empty(), "fuzz inputs that panic:\n{}", failures.join("\n"));
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let fuzz = repo().join("fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    for (name, _) in targets::TARGETS {
        let body = std::fs::read_to_string(fuzz.join("fuzz_targets").join(format!("{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{name}.rs: {e}"));
        assert!(body.contains(&format!("linesight_fuzz::{name}(data)")), "fuzz_targets/{name}.rs runs {name}");
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has the bin {name}");
    }
}

/// The known bad MQTT inputs of reliability.md item 12 are in the committed regressions.
#[test]
fn the_known_bad_mqtt_inputs_are_replayed() {
    let dir = repo().join("fuzz/regressions/mqtt_packet");
    for name in ["zero-length-topic", "remaining-length-overflow", "topic-length-beyond-packet", "oversized-packet"] {
        let data = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("fuzz/regressions/mqtt_packet/{name}: {e}"));
        targets::mqtt_packet(&data);
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds

fn put(dir: &Path, target: &str, name: &str, data: impl AsRef<[u8]>) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), data).unwrap();
}

/// An MQTT packet as rumqttc writes it.
fn packet(p: rumqttc::Packet) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    p.write(&mut b, 1 << 20).unwrap();
    b.to_vec()
}

fn publish(topic: &str, payload: &[u8], qos: rumqttc::QoS) -> Vec<u8> {
    let mut p = rumqttc::Publish::new(topic, qos, payload.to_vec());
    if qos != rumqttc::QoS::AtMostOnce {
        p.pkid = 7;
    }
    packet(rumqttc::Packet::Publish(p))
}

fn sparkplug_payload(metrics: Vec<linesight::telemetry::sparkplug::proto::Metric>) -> Vec<u8> {
    use linesight::telemetry::sparkplug::proto::Payload;
    use prost::Message;
    Payload { timestamp: Some(1_795_840_496_789), metrics, seq: Some(3), ..Default::default() }.encode_to_vec()
}

fn metric(
    name: &str,
    datatype: u32,
    value: linesight::telemetry::sparkplug::proto::Value,
) -> linesight::telemetry::sparkplug::proto::Metric {
    linesight::telemetry::sparkplug::proto::Metric {
        name: Some(name.into()),
        datatype: Some(datatype),
        value: Some(value),
        ..Default::default()
    }
}

/// CRC-16/MODBUS, appended low byte first.
fn rtu_frame(body: &[u8]) -> Vec<u8> {
    let mut crc: u16 = 0xFFFF;
    for &b in body {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
    }
    let mut v = body.to_vec();
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

fn tcp_frame(unit: u8, pdu: &[u8]) -> Vec<u8> {
    // tokio-modbus's first transaction id is 0.
    let mut v = vec![0, 0, 0, 0];
    v.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
    v.push(unit);
    v.extend_from_slice(pdu);
    v
}

/// The ONNX metadata map of a model file: `ModelProto.metadata_props` (field 14).
fn onnx_metadata(path: &Path) -> Vec<(String, String)> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Entry {
        #[prost(string, tag = "1")]
        key: String,
        #[prost(string, tag = "2")]
        value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Model {
        #[prost(message, repeated, tag = "14")]
        metadata_props: Vec<Entry>,
    }
    let bytes = std::fs::read(path).unwrap();
    let m = <Model as prost::Message>::decode(bytes.as_slice()).unwrap();
    m.metadata_props.into_iter().map(|e| (e.key, e.value)).collect()
}

/// `[kind][u16 length][content]`, the file list of the `queue_dir` target.
fn queue_file(kind: u8, first_seq: Option<u64>, content: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    if let Some(s) = first_seq {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.extend_from_slice(&(content.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    v.extend_from_slice(&content[..content.len().min(usize::from(u16::MAX))]);
    v
}

fn chunk(content: &[u8]) -> Vec<u8> {
    let mut v = (content.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(content);
    v
}

#[test]
#[ignore = "writes seed inputs: LINESIGHT_FUZZ_SEEDS=DIR cargo test --test it fuzz_corpus::write_seeds -- --ignored"]
fn write_seeds() {
    use linesight::telemetry::sparkplug::proto::Value as V;
    let out = PathBuf::from(std::env::var("LINESIGHT_FUZZ_SEEDS").expect("LINESIGHT_FUZZ_SEEDS=DIR"));
    let repo = repo();

    // Configs: the shipped ones, the tests' node, and the example block of the line config uncommented.
    for f in ["firmware-config/demo.yaml", "firmware-config/line-3-cell-07.yaml"] {
        let text = std::fs::read_to_string(repo.join(f)).unwrap();
        put(&out, "config_yaml", f.rsplit('/').next().unwrap(), &text);
        if f.ends_with("line-3-cell-07.yaml") {
            let mut inside = false;
            let uncommented: Vec<String> = text
                .lines()
                .map(|l| {
                    if l.contains("# >>> example") {
                        inside = true;
                        return l.to_string();
                    }
                    if l.contains("# <<< end of example") {
                        inside = false;
                    }
                    if inside {
                        l.replacen("  # ", "  ", 1)
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            put(&out, "config_yaml", "line-3-cell-07-sparkplug-tls.yaml", uncommented.join("\n"));
        }
    }
    // Its paths relative to firmware-config/, where the target resolves them.
    let node = crate::common::node_yaml("127.0.0.1:1502", 1883, "", 10.0).replace(&repo.display().to_string(), "..");
    put(&out, "config_yaml", "test-node.yaml", node);

    // JSON commands: each command, a timestamp of each kind, and refusals.
    let commands = [
        r#"{"id": "42", "ts": "2026-11-28T04:30:00Z", "command": "set-point", "point": "speed_setpoint", "value": 12.5}"#,
        r#"{"id":7,"command":"set-threshold","task":"inspect","threshold":0.7}"#,
        r#"{"id":"a","command":"enable-task","task":"inspect","ts":1795840496789}"#,
        r#"{"id":"b","command":"disable-task","task":"inspect"}"#,
        r#"{"id":"c","command":"rebirth"}"#,
        r#"{"id":"c3","command":"set-output","output":"reject_gate","value":true}"#,
        r#"{"id":"t3","command":"set-threshold","task":"inspect","threshold":0.5,"force":true}"#,
        r#"{"id":"s","command":"set-point","point":"name","value":"AB-12"}"#,
        r#"[1, 2]"#,
    ];
    for (i, c) in commands.iter().enumerate() {
        put(&out, "json_command", &format!("command-{i}.json"), c);
    }

    // Sparkplug commands (first byte: the topic), from linesight's own proto types.
    let sp = [
        (0u8, vec![metric("Node Control/Rebirth", 11, V::BooleanValue(true))]),
        (1, vec![metric("Inspection/Enabled", 11, V::BooleanValue(false))]),
        (1, vec![metric("Inspection/NG Threshold", 10, V::DoubleValue(0.7))]),
        (1, vec![metric("Inspection/NG Threshold", 9, V::FloatValue(0.6))]),
        (2, vec![metric("Points/speed", 3, V::IntValue(u32::MAX)), metric("Points/on", 11, V::BooleanValue(true))]),
        (2, vec![metric("Points/speed", 4, V::LongValue(5)), metric("Points/name", 12, V::StringValue("x".into()))]),
        (3, vec![metric("Points/speed", 8, V::LongValue(5))]),
        (4, vec![metric("Points/speed", 17, V::BytesValue(vec![1, 2]))]),
    ];
    let mut ncmd = Vec::new();
    for (i, (topic, metrics)) in sp.into_iter().enumerate() {
        let payload = sparkplug_payload(metrics);
        if i == 0 {
            ncmd = payload.clone();
        }
        let mut v = vec![topic];
        v.extend_from_slice(&payload);
        put(&out, "sparkplug_command", &format!("command-{i}.pb"), v);
    }

    put(
        &out,
        "sparkplug_command",
        "state.json",
        [&[5u8][..], br#"{"online": true, "timestamp": 1795840496789}"#].concat(),
    );

    // MQTT: what a broker sends linesight, as rumqttc writes it, one connection's worth each.
    use rumqttc::{ConnAck, ConnectReturnCode, Packet, PubAck, QoS, SubAck, SubscribeReasonCode, UnsubAck};
    let connack = packet(Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)));
    let suback = packet(Packet::SubAck(SubAck::new(1, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)])));
    let session = [
        connack.clone(),
        suback.clone(),
        publish("linesight/line/cell/commands", commands[1].as_bytes(), QoS::AtLeastOnce),
        publish("spBv1.0/line/NCMD/cell", &ncmd, QoS::AtMostOnce),
        publish("spBv1.0/STATE/scada-01", br#"{"online": true, "timestamp": 1795840496789}"#, QoS::AtLeastOnce),
        packet(Packet::PubAck(PubAck::new(3))),
        packet(Packet::UnsubAck(UnsubAck::new(4))),
        packet(Packet::PingResp),
    ]
    .concat();
    put(&out, "mqtt_packet", "session", &session);
    put(&out, "mqtt_packet", "connack-suback", [connack.clone(), suback].concat());
    put(
        &out,
        "mqtt_packet",
        "refused-subscription",
        packet(Packet::SubAck(SubAck::new(1, vec![SubscribeReasonCode::Failure]))),
    );
    put(&out, "mqtt_packet", "retained-command", {
        let mut p = rumqttc::Publish::new("linesight/line/cell/commands", QoS::AtMostOnce, commands[4].as_bytes());
        p.retain = true;
        packet(Packet::Publish(p))
    });

    // Modbus values: structured input, a few shapes (see `point_spec`).
    put(&out, "modbus_values", "u32-block", [1u8, 3, 3, 10, 0, 2, 0, 0x12, 0x34, 0x56, 0x78]);
    put(&out, "modbus_values", "string", [0u8, 3, 9, 20, 0, 4, 0, 0, b'A', b'B', b'C', b' ', 0, 0, 0, 0]);
    put(&out, "modbus_values", "coils", [2u8, 0, 1, 0, 0, 0, 0x55]);
    put(
        &out,
        "modbus_values",
        "scaled",
        [0u8, 0x23, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0xb9, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );

    // Modbus frames: [transport and request][address][count] then the reply. TCP, unit 1.
    let reads: [(u8, Vec<u8>); 7] = [
        (0 << 1, vec![0x01, 1, 0b0000_0101]),                        // read coils, 3 coils
        (1 << 1, vec![0x02, 1, 0b0000_0001]),                        // read discrete inputs
        (2 << 1, vec![0x04, 6, 0, 1, 0, 2, 0, 3]),                   // read input registers, 3
        (3 << 1, vec![0x03, 6, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]), // read holding registers, 3
        (4 << 1 | 0x80, vec![0x05, 0, 10, 0xFF, 0]),                 // write single coil 10 on
        (5 << 1, vec![0x06, 0, 10, 0, 3]),                           // write single register 10 = 3
        (6 << 1, vec![0x10, 0, 10, 0, 4]),                           // write multiple registers
    ];
    for (i, (pick, pdu)) in reads.iter().enumerate() {
        let mut tcp = vec![*pick, 10, 2];
        tcp.extend(tcp_frame(1, pdu));
        put(&out, "modbus_frame", &format!("tcp-{i}"), tcp);
        let mut rtu = vec![*pick | 1, 10, 2];
        rtu.extend(rtu_frame(&[[1u8].as_slice(), pdu].concat()));
        put(&out, "modbus_frame", &format!("rtu-{i}"), rtu);
    }
    let mut exception = vec![3 << 1, 10, 2];
    exception.extend(tcp_frame(1, &[0x83, 0x02]));
    put(&out, "modbus_frame", "tcp-exception", exception);

    // Model metadata: every Ultralytics export in the repository, each value a Python literal.
    let mut onnx: Vec<PathBuf> = files(&repo.join("models"));
    onnx.extend(files(&repo.join("models/test")));
    onnx.retain(|p| p.extension().is_some_and(|e| e == "onnx"));
    for model in &onnx {
        let meta = onnx_metadata(model);
        let stem = model.file_stem().unwrap().to_string_lossy().to_string();
        if meta.iter().any(|(k, _)| k == "names") {
            let map: Vec<String> = meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
            put(&out, "model_metadata", &stem, map.join("\0"));
            for (k, v) in &meta {
                if matches!(k.as_str(), "names" | "imgsz" | "args" | "stride" | "kpt_shape" | "batch" | "end2end") {
                    put(&out, "pyliteral", &format!("{stem}-{k}"), v);
                }
            }
        }
        if let Some((_, contract)) = meta.iter().find(|(k, _)| k == "linesight") {
            put(&out, "model_sidecar", &format!("{stem}-embedded.json"), contract);
        }
    }
    let mut sidecars = files(&repo.join("models"));
    sidecars.extend(files(&repo.join("models/test")));
    sidecars.extend(files(&repo.join("tests/models")));
    for s in sidecars.iter().filter(|p| p.to_string_lossy().ends_with(".onnx.json")) {
        put(&out, "model_sidecar", &s.file_name().unwrap().to_string_lossy(), std::fs::read(s).unwrap());
    }

    // A queue as the store writes it: JSON results and Sparkplug NDATA, some acknowledged.
    let dir = tempfile::tempdir().unwrap();
    let cfg = linesight::store::StoreConfig {
        dir: dir.path().to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 512,
        fsync_every: std::time::Duration::ZERO,
        when_full: linesight::store::WhenFull::DropOldest,
    };
    {
        let (mut store, _) = linesight::store::Store::open(cfg.clone()).unwrap();
        for i in 0..6 {
            let doc = format!(r#"{{"part_id":{i},"task":"inspect","verdict":"NG","score":0.91}}"#);
            store.push("linesight/line/cell/tasks/inspect/result", doc.as_bytes(), 1, false).unwrap();
            let m = vec![metric("Results/inspect/Verdict", 12, V::StringValue("OK".into()))];
            store.push("spBv1.0/line/NDATA/cell", &sparkplug_payload(m), 0, false).unwrap();
        }
        store.ack(3).unwrap();
        store.flush().unwrap();
    }
    let mut dir_seed = Vec::new();
    for f in files(dir.path()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let content = std::fs::read(&f).unwrap();
        match linesight::store::segment::parse_segment_name(&name) {
            Some(first) => {
                put(&out, "queue_segment", &name, &content);
                dir_seed.extend(queue_file(3, Some(first), &content));
            }
            None if name == "ack" => dir_seed.extend(queue_file(0, None, &content)),
            None => {}
        }
    }
    put(&out, "queue_dir", "store", &dir_seed);

    // The state files: the guard's id file and the bdSeq, as linesight writes them.
    let state = tempfile::tempdir().unwrap();
    let guard = linesight::telemetry::guard::Guard::open(state.path());
    let now = linesight::util::time::now_ms();
    for id in ["42", "c1"] {
        let origin = linesight::telemetry::guard::Origin {
            source: "t/commands".into(),
            id: linesight::telemetry::guard::CommandId::Json(id.into()),
            sent_ms: Some(now),
        };
        guard.admit(&origin, 1, now, tokio::time::Instant::now()).unwrap();
    }
    let sp_origin = linesight::telemetry::guard::Origin {
        source: "spBv1.0/line/NCMD/cell".into(),
        id: linesight::telemetry::guard::CommandId::sparkplug("spBv1.0/line/NCMD/cell", &ncmd),
        sent_ms: None,
    };
    guard.admit(&sp_origin, 1, now, tokio::time::Instant::now()).unwrap();
    let ids = std::fs::read(state.path().join(linesight::telemetry::guard::ID_FILE)).unwrap();
    let mut bd = linesight::telemetry::sparkplug::bdseq::BdSeq::open(&state.path().join("bdseq"));
    bd.take();
    let bdseq = std::fs::read(state.path().join("bdseq")).unwrap();
    put(&out, "state_files", "written", [chunk(&ids), chunk(&bdseq), b"c2".to_vec()].concat());
    put(&out, "state_files", "replay", [chunk(&ids), chunk(b"255\n"), b"42".to_vec()].concat());
}
