//! `check-config`: every class of config error, with its message and its
//! line and column; every problem reported at once; exit 78 when invalid.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use linesight::config::{self, Diagnostic};

/// A valid node, the base every broken config here (and in snapshots.rs) is made from.
pub(crate) fn valid() -> String {
    let repo = repo();
    format!(
        r#"node:
  group_id: line-3
  node_id: cell-07
mqtt:
  host: 127.0.0.1
  port: 1883
modbus:
  devices:
    plc:
      tcp: "192.168.10.5:502"
      addressing: one-based
  outputs:
    reject_gate:
      device: plc
      area: coil
      address: 11
      safe_state: off
cameras:
  top:
    source:
      file: {video}
models:
  surface:
    path: {model}
tasks:
  inspect:
    camera: top
    model: surface
    min_part_interval: 100ms
    inference_timeout: 200ms
    rules:
      ng_threshold: 0.5
    reject:
      output: reject_gate
      delay: 350ms
      pulse: 80ms
"#,
        video = repo.join("samples/line.avi").display(),
        model = repo.join("models/surface-classifier.onnx").display()
    )
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match config::load_str(text, "node.yaml", Path::new("/")) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0,
    }
}

/// Exactly one error, at `line:col`, whose text contains each of `words`.
fn one_error(text: &str, line: usize, col: usize, words: &[&str]) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got: {errs:#?}");
    let e = &errs[0];
    let shown = e.to_string();
    assert_eq!((e.line, e.col), (line, col), "{shown}");
    for w in words {
        assert!(shown.contains(w), "`{w}` missing from: {shown}");
    }
    assert!(shown.starts_with(&format!("node.yaml:{line}:{col}: ")), "{shown}");
    assert!(shown.contains(" — "), "every error says how to fix it: {shown}");
}

#[test]
fn the_valid_file_is_valid() {
    config::load_str(&valid(), "node.yaml", Path::new("/")).unwrap();
}

#[test]
fn syntax_error() {
    one_error(&valid().replace("  node_id: cell-07", "  node_id: [cell-07"), 4, 5, &["not valid YAML"]);
}

#[test]
fn unknown_keys_are_errors_with_suggestions() {
    one_error(&valid().replace("mqtt:", "mqqt:"), 4, 1, &["unknown section `mqqt`", "did you mean `mqtt`"]);
    one_error(
        &valid().replace("      safe_state: off", "      safe_state: off\n      safe_sate: on"),
        18,
        7,
        &["unknown field `safe_sate`", "did you mean `safe_state`?"],
    );
}

#[test]
fn misspelt_nested_keys_and_values_get_the_nearest_name() {
    one_error(
        &valid().replace("    inference_timeout: 200ms", "    inference_timout: 200ms"),
        30,
        5,
        &["unknown field `inference_timout`", "— did you mean `inference_timeout`?"],
    );
    one_error(
        &valid().replace("      ng_threshold: 0.5", "      ng_treshold: 0.5"),
        32,
        7,
        &["unknown field `ng_treshold`", "— did you mean `ng_threshold`?"],
    );
    one_error(&valid().replace("      area: coil", "      area: coils"), 15, 13, &["— did you mean `coil`?"]);
    // Nothing near: the hint lists what is allowed.
    let far = errors(&valid().replace("      safe_state: off", "      safe_state: off\n      zzzzzzzzzz: on"));
    assert_eq!(far.len(), 1, "{far:#?}");
    assert_eq!(far[0].hint, "use one of: `device`, `area`, `address`, `safe_state`");
    let far = errors(&valid().replace("      area: coil", "      area: qqqqqqqqq"));
    assert_eq!(far[0].hint, "use `coil` or `holding-register`");
}

#[test]
fn references_to_things_that_do_not_exist() {
    one_error(&valid().replace("    camera: top", "    camera: tpo"), 27, 13, &["camera `tpo`", "did you mean `top`"]);
    one_error(&valid().replace("    model: surface", "    model: nope"), 28, 12, &["model `nope`", "not in models"]);
    one_error(
        &valid().replace("      output: reject_gate", "      output: gate"),
        34,
        15,
        &["output `gate`", "modbus.outputs"],
    );
    one_error(
        &valid().replace("      device: plc", "      device: plc2"),
        14,
        15,
        &["device `plc2`", "did you mean `plc`"],
    );
}

#[test]
fn modbus_addresses_out_of_range() {
    // One-based addressing has no address 0.
    one_error(
        &valid().replace("      address: 11", "      address: 0"),
        16,
        16,
        &["address 0 is out of range", "1..=65536"],
    );
    one_error(&valid().replace("      address: 11", "      address: 70000"), 16, 16, &["out of range"]);
    let overlapping = valid().replace(
        "      safe_state: off\n",
        "      safe_state: off\n    lamp:\n      device: plc\n      area: coil\n      address: 11\n      safe_state: on\n",
    );
    let errs = errors(&overlapping);
    assert!(errs.iter().any(|e| e.message.contains("writes the same coil of device `plc`")), "{errs:#?}");
}

#[test]
fn detector_zones_need_three_corners_and_regions_must_not_be_empty() {
    let text = valid().replace(
        "      ng_threshold: 0.5\n",
        "      ng_threshold: 0.5\n      zones: [[[0, 0], [10, 0]]]\n      roi: [50, 50, 10, 60]\n",
    );
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.message.contains("zone 0 has 2 corner(s)")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.message.contains("region [50, 50, 10, 60] is empty")), "{errs:#?}");
    let fine = valid().replace(
        "      ng_threshold: 0.5\n",
        "      ng_threshold: 0.5\n      zones: [[[0, 0], [10, 0], [10, 10]]]\n      roi: [0, 0, 640, 480]\n",
    );
    loads(&fine);
}

#[test]
fn the_uncertain_band_lies_below_the_threshold_with_a_known_action() {
    let with = |band: &str| {
        valid().replace("      ng_threshold: 0.5\n", &format!("      ng_threshold: 0.5\n      uncertain: {band}\n"))
    };
    one_error(&with("{ from: 0.6, action: flag }"), 33, 26, &["`from` 0.6 is not below ng_threshold 0.5"]);
    one_error(&with("{ from: -0.1 }"), 33, 26, &["`from` -0.1 is outside 0..1"]);
    let errs = errors(&with("{ from: 0.3, action: divert }"));
    assert!(errs.iter().any(|e| e.message.contains("divert") && e.message.contains("flag")), "{errs:#?}");
    loads(&with("{ from: 0.3, action: pass }"));
    loads(&with("{ from: 0.3 }"));
}

#[test]
fn thresholds_outside_zero_to_one() {
    one_error(&valid().replace("ng_threshold: 0.5", "ng_threshold: 1.5"), 32, 21, &["1.5 is outside 0..1"]);
}

#[test]
fn pulse_longer_than_the_part_interval() {
    one_error(
        &valid().replace("pulse: 80ms", "pulse: 120ms"),
        36,
        14,
        &["pulse 120ms is not shorter than the part interval 100ms"],
    );
}

#[test]
fn verdict_due_after_the_part_passed_the_gate() {
    one_error(
        &valid().replace("inference_timeout: 200ms", "inference_timeout: 500ms"),
        35,
        14,
        &["shorter than the inference timeout"],
    );
}

#[test]
fn bad_values() {
    one_error(&valid().replace("delay: 350ms", "delay: 350"), 35, 14, &["no unit", "80ms"]);
    one_error(&valid().replace("  port: 1883", "  port: 70000"), 6, 9, &["70000 is out of range for u16"]);
    one_error(&valid().replace("      area: coil", "      area: coils"), 15, 13, &["unknown variant `coils`"]);
    one_error(&valid().replace("  node_id: cell-07", "  node_id: cell/07"), 3, 12, &["cannot be used as node_id"]);
}

#[test]
fn a_model_pin_must_be_a_sha256() {
    let model = repo().join("models/surface-classifier.onnx").display().to_string();
    let pin =
        |v: &str| valid().replace(&format!("    path: {model}\n"), &format!("    path: {model}\n    sha256: {v}\n"));
    config::load_str(&pin(&"aB".repeat(32)), "node.yaml", Path::new("/")).unwrap();
    one_error(&pin("abc"), 25, 13, &["sha256 `abc` is not a SHA-256", "sha256sum"]);
    one_error(&pin(&"g".repeat(64)), 25, 13, &["is not a SHA-256"]);
}

#[test]
fn missing_files_and_sections() {
    let text = valid().replace("samples/line.avi", "samples/nothing.avi");
    one_error(&text, 21, 13, &["nothing.avi` does not exist"]);
    let errs = errors(&valid().replace("models:\n  surface:", "modelz:\n  surface:"));
    assert!(errs.iter().any(|e| e.message.contains("missing section `models`")), "{errs:#?}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = valid()
        .replace("mqtt:", "mqqt:")
        .replace("    camera: top", "    camera: tpo")
        .replace("ng_threshold: 0.5", "ng_threshold: 2")
        .replace("pulse: 80ms", "pulse: 120ms")
        .replace("      address: 11", "      address: 0");
    let errs = errors(&text);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "reported in file order");
}

#[test]
fn check_config_command_exit_codes_and_format() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), &valid());
    let out = Command::new(bin()).arg("check-config").arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, valid().replace("    camera: top", "    camera: tpo").replace("pulse: 80ms", "pulse: 1s"))
        .unwrap();
    let out = Command::new(bin()).arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(linesight::EXIT_CONFIG));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:27:13: task `inspect` names camera `tpo`", bad.display())), "{err}");
    assert!(err.contains(&format!("{}:36:14: reject pulse 1s", bad.display())), "{err}");

    // `run` refuses the same file with the same code, before touching anything.
    let out = Command::new(bin()).args(["run", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(linesight::EXIT_CONFIG));
}

#[test]
fn every_firmware_config_file_is_valid() {
    let dir = repo().join("firmware-config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            if let Err(e) = config::load_file(&path) {
                panic!("{} is invalid:\n{e}", path.display());
            }
            n += 1;
        }
    }
    assert!(n >= 2, "firmware-config holds the demo and at least one line example");
}

#[test]
fn committed_json_schema_is_current() {
    let committed = std::fs::read_to_string(repo().join("firmware-config/linesight.schema.json")).expect(
        "firmware-config/linesight.schema.json: run `linesight config-schema > firmware-config/linesight.schema.json`",
    );
    assert!(
        committed == config::json_schema(),
        "firmware-config/linesight.schema.json is stale: run `cargo run -- config-schema > firmware-config/linesight.schema.json`"
    );
}

/// The valid file with line I/O: points, a trigger, an encoder-timed gate,
/// a heartbeat, a result block and a stack light.
fn with_line_io() -> String {
    valid()
        .replace(
            "  outputs:\n",
            r#"    io:
      rtu: { port: /dev/ttyUSB0, baud: 19200 }
      unit: 3
  points:
    eye: { device: plc, area: discrete-input, address: 1, poll: 2ms }
    encoder: { device: plc, area: input-register, address: 21, type: u32, poll: 2ms }
    temp: { device: io, area: input-register, address: 1, type: i16, scale: 0.1, poll: 1s }
  heartbeat: { device: plc, address: 101 }
  result_blocks:
    cell: { device: plc, address: 201 }
  outputs:
    lamp_red: { device: io, area: coil, address: 1, safe_state: on }
"#,
        )
        .replace("cameras:\n", "line:\n  encoder: encoder\nstack_light:\n  fault: lamp_red\ncameras:\n")
        .replace("    model: surface\n", "    model: surface\n    trigger: { point: eye }\n    handshake: cell\n")
        .replace("      delay: 350ms\n", "      distance: 12000\n")
        .replace("    source:\n", "    mode: triggered\n    source:\n")
}

#[test]
fn line_io_example_is_valid() {
    config::load_str(&with_line_io(), "node.yaml", Path::new("/")).unwrap();
}

/// Every error of `text`, as shown, must contain the matching fragments.
fn errors_contain(text: &str, expected: &[&[&str]]) {
    let errs: Vec<String> = errors(text).iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    for (e, words) in errs.iter().zip(expected) {
        for w in *words {
            assert!(e.contains(w), "`{w}` missing from: {e}");
        }
        assert!(e.contains(" — "), "every error says how to fix it: {e}");
    }
}

#[test]
fn points_that_do_not_fit() {
    // A u32 needs two registers: one-based address 65536 leaves room for one.
    errors_contain(
        &with_line_io().replace("address: 21, type: u32", "address: 65536, type: u32"),
        &[&["addresses 65536..=65537 is out of range", "1..=65536"]],
    );
    // A coil holds one bit.
    errors_contain(
        &with_line_io()
            .replace("area: discrete-input, address: 1, poll", "area: discrete-input, address: 1, type: f32, poll"),
        &[&["holds one bit", "cannot be read as F32"], &["trigger"]],
    );
    // A register point needs a type; a bool from a register needs its bit.
    errors_contain(&with_line_io().replace(", type: i16, scale: 0.1", ""), &[&["has no `type`"]]);
    errors_contain(&with_line_io().replace("type: i16, scale: 0.1", "type: bool"), &[&["says no `bit`"]]);
    // An input register cannot be written by anyone.
    errors_contain(
        &with_line_io().replace("scale: 0.1, poll: 1s", "poll: 1s, writable: true"),
        &[&["cannot be written"]],
    );
}

#[test]
fn two_owners_of_one_output_and_bad_unit_ids() {
    // The heartbeat register is inside the result block.
    errors_contain(
        &with_line_io().replace("heartbeat: { device: plc, address: 101 }", "heartbeat: { device: plc, address: 203 }"),
        &[&["writes the same holding register of device `plc`", "the heartbeat"]],
    );
    errors_contain(
        &with_line_io().replace("      unit: 3\n", "      unit: 250\n"),
        &[&["unit id 250 does not exist on a serial bus"]],
    );
    errors_contain(&with_line_io().replace("      unit: 3\n", "      unit: 0\n"), &[&["broadcast"]]);
    errors_contain(
        &with_line_io().replace(
            "      rtu: { port: /dev/ttyUSB0, baud: 19200 }\n",
            "      rtu: { port: /dev/ttyUSB0, baud: 19200 }\n      tcp: \"h:502\"\n",
        ),
        &[&["both `tcp` and `rtu`"]],
    );
}

#[test]
fn triggers_gates_and_lights_are_cross_checked() {
    // A trigger on a counter must say `increment`; an edge needs a bool.
    errors_contain(
        &with_line_io().replace("trigger: { point: eye }", "trigger: { point: encoder }"),
        &[&["cannot use point `encoder`"]],
    );
    // The camera must be triggered when the task has a trigger, and the other way round.
    errors_contain(&with_line_io().replace("    mode: triggered\n", ""), &[&["not `mode: triggered`"]]);
    // A distance needs the encoder.
    errors_contain(&with_line_io().replace("line:\n  encoder: encoder\n", ""), &[&["needs the line's encoder"]]);
    // Delay and distance together.
    errors_contain(
        &with_line_io().replace("      distance: 12000\n", "      distance: 12000\n      delay: 300ms\n"),
        &[&["both `delay` and `distance`"]],
    );
    // The stack light names a missing output; the handshake a missing block.
    errors_contain(
        &with_line_io().replace("  fault: lamp_red", "  fault: lamp_rd"),
        &[&["output `lamp_rd`", "did you mean `lamp_red`"]],
    );
    errors_contain(
        &with_line_io().replace("    handshake: cell\n", "    handshake: cel\n"),
        &[&["result block `cel`"]],
    );
    // A gate that is also a lamp has two owners.
    errors_contain(&with_line_io().replace("  fault: lamp_red", "  fault: reject_gate"), &[&["also a stack light"]]);
}

/// The line I/O example with a latch register beside the encoder and `trigger.latch`.
fn with_latch() -> String {
    with_line_io()
        .replace(
            "    temp: {",
            "    eye_count: { device: plc, area: input-register, address: 23, type: u32, poll: 2ms }\n    temp: {",
        )
        .replace("trigger: { point: eye }", "trigger: { point: eye, latch: eye_count }")
}

#[test]
fn the_trigger_latch_is_checked() {
    loads(&with_latch());
    // Every error at the `latch` key, naming the file and line, saying how to fix it.
    let latch_line = with_latch().lines().position(|l| l.contains("latch: eye_count }")).unwrap() + 1;
    let at_latch = |text: &str, words: &[&str]| {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        let s = errs[0].to_string();
        assert_eq!(errs[0].line, latch_line, "{s}");
        assert!(s.contains("node.yaml:") && s.contains(" — "), "{s}");
        for w in words {
            assert!(s.contains(w), "`{w}` missing from: {s}");
        }
    };
    at_latch(
        &with_latch().replace("latch: eye_count }", "latch: eye_cnt }"),
        &["`eye_cnt`", "did you mean `eye_count`"],
    );
    at_latch(&with_latch().replace("address: 23, type: u32", "address: 23, type: i32"), &["raw u16 or u32"]);
    at_latch(
        &with_latch().replace("address: 23, type: u32,", "address: 23, type: u32, scale: 2,"),
        &["raw u16 or u32"],
    );
    at_latch(
        &with_latch().replace("address: 23, type: u32", "address: 23, type: u16"),
        &["is U16 and the encoder is U32"],
    );
    at_latch(
        &with_latch().replace("address: 23, type: u32, poll: 2ms", "address: 23, type: u32, poll: 10ms"),
        &["every 10ms", "same poll cycle"],
    );
    loads(&with_latch().replace("point: eye, latch", "point: eye, on: falling-edge, latch"));
    // A latch needs the encoder (and the distance gate says so too).
    let no_encoder = errors(&with_latch().replace("line:\n  encoder: encoder\n", ""));
    assert!(
        no_encoder.iter().any(|e| e.line == latch_line - 2 && e.to_string().contains("a latched count is an encoder")),
        "{no_encoder:#?}"
    );
    // A part counter has no edge to latch.
    let counter = errors(&with_latch().replace("trigger: { point: eye,", "trigger: { point: encoder, on: increment,"));
    assert!(counter.iter().any(|e| e.to_string().contains("counts parts (`on: increment`)")), "{counter:#?}");
    // An unknown key next to it is refused, naming it.
    let typo = errors(&with_latch().replace("latch: eye_count }", "latched: eye_count }"));
    assert!(typo.iter().any(|e| e.line == latch_line && e.to_string().contains("latched")), "{typo:#?}");
}

/// Every error of `text`, in file order, at `(line, col)` and containing the fragments.
fn errors_at(text: &str, expected: &[(usize, usize, &[&str])]) {
    let errs = errors(text);
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), expected.len(), "{shown:#?}");
    for (e, (line, col, words)) in errs.iter().zip(expected) {
        let s = e.to_string();
        assert_eq!((e.line, e.col), (*line, *col), "{s}");
        for w in *words {
            assert!(s.contains(w), "`{w}` missing from: {s}");
        }
        assert!(s.contains(" — "), "every error says how to fix it: {s}");
    }
}

/// The valid file with `extra` lines in its mqtt section, right after `port: 1883` (line 6):
/// the first extra line is line 7.
fn with_mqtt(extra: &str) -> String {
    valid().replace("  port: 1883\n", &format!("  port: 1883\n{extra}"))
}

fn loads(text: &str) {
    if let Err(e) = config::load_str(text, "node.yaml", Path::new("/")) {
        panic!("expected a valid config, got:\n{e}\nfor:\n{text}");
    }
}

#[test]
fn failover_brokers_are_usable_and_listed_once() {
    loads(&with_mqtt("  failover:\n    - { host: broker-b }\n    - { host: broker-b, port: 8883 }\n"));
    one_error(&with_mqtt("  failover:\n    - host: \"\"\n"), 8, 13, &["failover broker 0 has an empty host"]);
    one_error(
        &with_mqtt("  failover:\n    - { host: broker-b, port: 0 }\n"),
        8,
        31,
        &["port 0 of failover broker 0", "1883"],
    );
    // The primary again (the port defaults to 1883, the primary's).
    one_error(
        &with_mqtt("  failover:\n    - { host: broker-b }\n    - { host: 127.0.0.1 }\n"),
        9,
        7,
        &["failover broker 127.0.0.1:1883 is the primary broker", "remove it"],
    );
    // Host names ignore case.
    one_error(
        &with_mqtt("  failover:\n    - { host: broker-b, port: 1884 }\n    - { host: Broker-B, port: 1884 }\n"),
        9,
        7,
        &["failover broker Broker-B:1884 is listed twice (entries 0 and 1)", "remove the second entry"],
    );
}

#[test]
fn tls_files_that_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    one_error(
        &with_mqtt("  tls:\n    ca: /nonexistent/ca.pem\n"),
        8,
        9,
        &["TLS: /nonexistent/ca.pem: cannot read", "point `ca` at", "must also exist where check-config runs"],
    );
    one_error(
        &with_mqtt(&format!("  tls:\n    ca: {}\n", junk.display())),
        8,
        9,
        &["junk.pem: no PEM certificate in the file", "point `ca` at"],
    );
    // `cert` and `key` go together; the CA is checked all the same.
    errors_at(
        &with_mqtt("  tls:\n    ca: /nonexistent/ca.pem\n    cert: /nonexistent/cell.pem\n"),
        &[
            (8, 9, &["/nonexistent/ca.pem: cannot read"]),
            (9, 11, &["`mqtt.tls.cert` is given without `key`", "add `key:`"]),
        ],
    );
}

#[test]
fn tls_client_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    test_certs(dir.path());
    let d = dir.path().display();
    let tls = |cert: &str, key: &str| {
        with_mqtt(&format!("  port: 8883\n  tls:\n    ca: {d}/ca.pem\n    cert: {d}/{cert}\n    key: {d}/{key}\n"))
            .replace("  port: 1883\n", "")
    };
    loads(&with_mqtt(&format!("  tls:\n    ca: {d}/ca.pem\n")));
    loads(&tls("client.pem", "client.key"));
    // Lines: 6 port, 7 tls, 8 ca, 9 cert, 10 key.
    one_error(&tls("client.pem", "server.key"), 10, 10, &["the key does not fit the certificate", "belongs to `cert`"]);
    one_error(&tls("client.pem", "nothing.key"), 10, 10, &["nothing.key: cannot read", "point `key` at"]);
    one_error(&tls("client.key", "client.key"), 9, 11, &["client.key: no PEM certificate", "point `cert` at"]);
    one_error(&tls("client.pem", "client.pem"), 10, 10, &["client.pem: no private key", "point `key` at"]);
    one_error(
        &with_mqtt(&format!("  tls:\n    ca: {d}/ca.pem\n    key: {d}/client.key\n")),
        9,
        10,
        &["`mqtt.tls.key` is given without `cert`", "add `cert:`"],
    );
}

#[test]
fn sparkplug_host_id_and_report_interval() {
    loads(&with_mqtt("  dialect: sparkplug\n  sparkplug:\n    primary_host: scada-01\n    report_every: 100ms\n"));
    one_error(
        &with_mqtt("  dialect: sparkplug\n  sparkplug:\n    primary_host: scada/1\n"),
        9,
        19,
        &["`scada/1` cannot be a Sparkplug host id", "no `/`, `+` or `#`", "1.4.1.8"],
    );
    one_error(
        &with_mqtt("  dialect: both\n  sparkplug:\n    primary_host: \"\"\n"),
        9,
        19,
        &["the Sparkplug primary host id is empty", "not empty"],
    );
    // Plain JSON does not use the Sparkplug ids.
    loads(&with_mqtt("  sparkplug:\n    primary_host: \"scada/#\"\n"));
    one_error(
        &with_mqtt("  dialect: sparkplug\n  sparkplug:\n    report_every: 50ms\n"),
        9,
        19,
        &["report interval 50ms is below 100ms", "use 1s"],
    );
}

#[test]
fn sparkplug_device_ids_differ_in_more_than_case() {
    let sparkplug = |text: String| text.replace("  port: 1883\n", "  port: 1883\n  dialect: sparkplug\n");
    let second_device = |name: &str| {
        valid().replace(
            "      addressing: one-based\n",
            &format!("      addressing: one-based\n    {name}:\n      tcp: \"192.168.10.6:502\"\n"),
        )
    };
    // Lines with the dialect: 10 `plc:`, 13 the second device's name, 14 its settings.
    loads(&sparkplug(second_device("plc-2")));
    loads(&second_device("PLC"));
    one_error(
        &sparkplug(second_device("PLC")),
        14,
        7,
        &["Modbus device `PLC` and Modbus device `plc` would be the same Sparkplug device id", "rename one"],
    );
    // A Modbus device named like a task: reported at the second in the file, the task (line 30).
    one_error(
        &sparkplug(second_device("Inspect")),
        30,
        5,
        &["task `inspect` and Modbus device `Inspect` would be the same Sparkplug device id"],
    );
    one_error(&sparkplug(second_device("inspect")), 30, 5, &["task `inspect` and Modbus device `inspect`"]);
}

#[test]
fn json_and_sparkplug_sessions_need_their_own_client_ids() {
    let text = "  client_id: cell-07\n  dialect: both\n  sparkplug:\n    client_id: cell-07\n";
    one_error(
        &with_mqtt(text),
        10,
        16,
        &["both use client id `cell-07`", "give `mqtt.sparkplug.client_id` an id of its own"],
    );
    // One session only: the same id is no clash.
    loads(&with_mqtt(&text.replace("dialect: both", "dialect: sparkplug")));
    loads(&with_mqtt("  client_id: cell-07\n  dialect: both\n"));
}

#[test]
fn check_config_refuses_broker_errors_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let text = with_mqtt(
        "  dialect: sparkplug\n  failover:\n    - { host: 127.0.0.1, port: 1883 }\n  tls:\n    ca: /nonexistent/ca.pem\n  sparkplug:\n    report_every: 10ms\n",
    );
    let bad = write_config(dir.path(), &text);
    let out = Command::new(bin()).arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(linesight::EXIT_CONFIG));
    let err = String::from_utf8_lossy(&out.stderr);
    let f = bad.display();
    for expected in [
        format!("{f}:9:7: failover broker 127.0.0.1:1883 is the primary broker"),
        format!("{f}:11:9: TLS: /nonexistent/ca.pem: cannot read"),
        format!("{f}:13:19: report interval 10ms is below 100ms"),
    ] {
        assert!(err.contains(&expected), "`{expected}` missing from:\n{err}");
    }
}

#[test]
fn the_sparkplug_and_tls_example_is_valid_when_uncommented() {
    let file = repo().join("firmware-config/line-3-cell-07.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let start = text.find("  # >>> example: sparkplug").expect("the commented example in line-3-cell-07.yaml");
    let end = text.find("  # <<< end of example").expect("the end of the example");
    let mut uncommented = String::new();
    for line in text[start..end].lines().skip(1) {
        let l = line.strip_prefix("  # ").unwrap_or_else(|| panic!("`{line}`: the example is commented as `  # `"));
        uncommented += &format!("  {l}\n");
    }
    let certs = tempfile::tempdir().unwrap();
    test_certs(certs.path());
    let d = certs.path().display();
    let uncommented = uncommented
        .replace("/etc/linesight/tls/plant-ca.pem", &format!("{d}/ca.pem"))
        .replace("/etc/linesight/tls/cell-07.pem", &format!("{d}/client.pem"))
        .replace("/etc/linesight/tls/cell-07.key", &format!("{d}/client.key"));
    let text = format!("{}{uncommented}{}", &text[..start], &text[end..]);
    let loaded = config::load_str(&text, "line-3-cell-07.yaml", &repo().join("firmware-config"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let config = loaded.config().clone();
    let mqtt = config.mqtt.unwrap();
    assert_eq!(mqtt.dialect, config::Dialect::Both);
    assert_eq!(mqtt.sparkplug.primary_host.as_deref(), Some("scada-01"));
    assert_eq!(mqtt.failover.len(), 1);
    assert!(mqtt.tls.is_some_and(|t| t.cert.is_some() && t.key.is_some()));
}

/// The demo edits a loaded config (its PLC and broker addresses, its pace): the edited config
/// is checked again in full, so an edit cannot bring in what the file could not say.
#[test]
fn an_edited_config_is_checked_again() {
    let loaded = config::load_str(&valid(), "node.yaml", Path::new("/")).unwrap();
    let moved = loaded.edited(|c| c.mqtt.as_mut().unwrap().port = 1884).unwrap();
    assert_eq!(moved.config().mqtt.as_ref().unwrap().port, 1884);
    // Everything else survives the round trip through the loader.
    let json = |c: &config::Config| serde_json::to_value(c).unwrap();
    let mut expected = json(loaded.config());
    expected["mqtt"]["port"] = 1884.into();
    assert_eq!(json(moved.config()), expected);
    let e = loaded.edited(|c| c.tasks.get_mut("inspect").unwrap().camera = "nowhere".into()).unwrap_err().to_string();
    assert!(e.contains("node.yaml (edited)") && e.contains("nowhere"), "{e}");
}

/// The valid file with `commands` under the task, on line 29.
fn with_commands(section: &str) -> String {
    valid().replace("    model: surface\n", &format!("    model: surface\n    commands: {section}\n"))
}

#[test]
fn command_limits_are_an_ordered_interval_inside_zero_to_one() {
    loads(&with_commands("{ threshold: [0.3, 0.7], allow_disable: true }"));
    loads(&with_commands("{ threshold: [0.5, 0.5] }"));
    loads(&with_commands("{ allow_disable: false }"));
    one_error(&with_commands("{ threshold: [0.7, 0.3] }"), 29, 28, &["[0.7, 0.3] are not in order", "[0.3, 0.7]"]);
    for bad in ["[0, 0.5]", "[0.5, 1]", "[-0.1, 0.5]", "[0.2, 1.5]"] {
        one_error(&with_commands(&format!("{{ threshold: {bad} }}")), 29, 28, &["are not inside (0, 1)", "0 < low"]);
    }
    one_error(&with_commands("{ threshold: [0.3] }"), 29, 28, &["invalid length 1"]);
    one_error(&with_commands("{ allow_disabel: true }"), 29, 17, &["unknown field `allow_disabel`", "allow_disable"]);
}

/// The line I/O file with one more point, `extra` its settings.
fn with_point(extra: &str) -> String {
    with_line_io().replace("  heartbeat:", &format!("    speed: {{ device: plc, {extra} }}\n  heartbeat:"))
}

#[test]
fn a_writable_number_needs_engineering_limits() {
    let hr = "area: holding-register, address: 41, type: u16, scale: 0.01, poll: 1s";
    loads(&with_point(&format!("{hr}, writable: true, min: 0, max: 1.5")));
    loads(&with_point(&format!("{hr}, writable: true, min: 0.5, max: 0.5")));
    // On/off points need none.
    loads(&with_point("area: coil, address: 41, poll: 1s, writable: true"));
    errors_contain(
        &with_point(&format!("{hr}, writable: true")),
        &[&["a writable number needs engineering limits: `min` and `max` missing", "add `min:` and `max:`"]],
    );
    errors_contain(&with_point(&format!("{hr}, writable: true, min: 0")), &[&["`max` missing"]]);
    errors_contain(&with_point(&format!("{hr}, writable: true, max: 3")), &[&["`min` missing"]]);
    errors_contain(&with_point(&format!("{hr}, writable: true, min: 2, max: 1")), &[&["`min` 2 is above `max` 1"]]);
    errors_contain(
        &with_point(&format!("{hr}, min: 0, max: 1")),
        &[&["limit what a command may write, and this point is not writable", "writable: true"]],
    );
    errors_contain(
        &with_point("area: coil, address: 41, poll: 1s, writable: true, min: 0, max: 1"),
        &[&["only apply to numbers, not to Bool"]],
    );
}

#[test]
fn the_state_dir_defaults_to_var_lib_and_resolves_against_the_file() {
    let loaded = config::load_str(&valid(), "node.yaml", Path::new("/etc/linesight")).unwrap();
    assert_eq!(loaded.config().runtime.state_dir, Path::new("/var/lib/linesight"));
    let text = format!("{}runtime:\n  state_dir: state\n", valid());
    let loaded = config::load_str(&text, "node.yaml", Path::new("/etc/linesight")).unwrap();
    assert_eq!(loaded.config().runtime.state_dir, Path::new("/etc/linesight/state"));
}

#[test]
fn a_queue_window_out_of_range_is_refused() {
    let with =
        |n: &str| valid().replace("  port: 1883", &format!("  port: 1883\n  queue: {{ dir: q, inflight: {n} }}"));
    errors_contain(&with("0"), &[&["node.yaml:7:30", "0 messages in flight is out of range", "1 to 16384"]]);
    errors_contain(&with("16385"), &[&["16385 messages in flight is out of range"]]);
    assert!(config::load_str(&with("16384"), "node.yaml", Path::new("/")).is_ok(), "16384 is the largest allowed");
}

#[test]
fn capture_settings_are_checked_all_at_once() {
    let with = |capture: &str| {
        valid().replace(
            "    min_part_interval: 100ms\n",
            &format!("    min_part_interval: 100ms\n    capture:\n{capture}"),
        )
    };
    let errs = errors(&with(
        "      ok_every: 0\n      ok_per_hour: 0\n      jpeg_quality: 0\n      max_files: 0\n      queue: 0\n      max_bytes: 0 B\n",
    ));
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    for key in ["ok_every is 0", "ok_per_hour is 0", "jpeg_quality 0", "max_files is 0", "queue 0", "max_bytes is 0"] {
        assert!(shown.iter().any(|s| s.contains(key) && s.contains(" — ")), "`{key}` missing: {shown:#?}");
    }
    assert_eq!(errs.len(), 6, "{shown:#?}");
    let unit = errors(&with("      max_bytes: 2000\n"));
    let shown = unit[0].to_string();
    assert!(shown.contains("has no unit") && shown.contains("sizes look like") && unit[0].line == 31, "{unit:#?}");
    let nothing = errors(&with("      ng: false\n      uncertain: false\n      error: false\n"));
    assert!(nothing[0].to_string().contains("capture keeps nothing"), "{nothing:#?}");
    let typo = errors(&with("      ok_evry: 5\n"));
    assert!(typo[0].to_string().contains("did you mean `ok_every`"), "{typo:#?}");
    loads(&with("      ok_every: 50\n      format: jpeg\n      max_bytes: 2 GB\n"));
    loads(&with("      dir: /tmp/capture\n"));
}

#[test]
fn rollout_keys_must_parse_and_be_named_once() {
    let key = linesight::rollout::keys::SigningKey::from_bytes(&[1; 32]).verifying_key();
    let hex = linesight::util::hex::encode(key.as_bytes());
    let base = valid().lines().count();
    let text = format!(
        "{}rollout:
  trusted_keys:
    - name: quality
      public_key: {hex}
    - name: quality
      public_key: \"abc\"
    - name: build
      file: missing.pub
  health:
    max_error_rate: 2
",
        valid()
    );
    errors_at(
        &text,
        &[
            (base + 5, 13, &["`quality` is used twice"]),
            (base + 6, 19, &["trusted key `quality`", "not a public key", "expected 64 hex digits"]),
            (base + 8, 13, &["missing.pub", "cannot be read"]),
            (base + 10, 21, &["max_error_rate 2"]),
        ],
    );
    // A `.pub` file is read relative to the config file's folder; the drop folder defaults to
    // the state directory's `incoming`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plant.key.pub"), format!("{hex}\n")).unwrap();
    let file = dir.path().join("node.yaml");
    std::fs::write(
        &file,
        format!("{}rollout:\n  trusted_keys:\n    - name: plant\n      file: plant.key.pub\n", valid()),
    )
    .unwrap();
    let loaded = config::load_file(&file).unwrap();
    let c = loaded.config();
    assert_eq!(c.rollout.trusted_keys[0].file.as_deref(), Some(dir.path().join("plant.key.pub").as_path()));
    assert_eq!(c.incoming_dir(), c.runtime.state_dir.join("incoming"));
    assert_eq!((c.rollout.health.first_parts, c.rollout.shadow.queue), (200, 2));
    let trusted = linesight::rollout::keys::trusted(&c.rollout).unwrap();
    assert_eq!((trusted[0].name.as_str(), trusted[0].key), ("plant", key));
}
