//! The MQTT door, against a real mosquitto: TLS with a private CA, mutual
//! TLS, and a clear reason for every way a broker refuses (expired or
//! unknown certificates on either side, a missing client certificate, bad
//! credentials, an ACL refusal); JSON commands answered by id, refused with
//! a reason when malformed, oversized, unknown or retained, none of which
//! stops the daemon; retained camera status.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::sparkplug::Decoder;
use crate::common::*;
use linesight::sim::plc::SimPlc;
use serde_json::{json, Value};

fn wait_log(log: &Path, timeout: Duration, f: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f(&std::fs::read_to_string(log).unwrap_or_default()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A tempdir mosquitto's own user can traverse (it reads the certificates after dropping root).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn tls_broker(certs: &Path, server: &str) -> Broker {
    Broker::start_configured(&format!(
        "cafile {c}/ca.pem\ncertfile {c}/{server}.pem\nkeyfile {c}/{server}.key\nrequire_certificate true\nuse_identity_as_username true",
        c = certs.display()
    ))
    .unwrap()
}

/// The test node with a client id of its own and `extra` keys in its `mqtt:` map.
fn node(plc: &str, port: u16, id: &str, extra: &str) -> String {
    let default_id = format!("client_id: \"test-{}\"", plc.replace(['.', ':'], "-"));
    node_yaml(plc, port, "", 10.0)
        .replace(&default_id, &format!("client_id: \"{id}\""))
        .replace("keep_alive: 5s }", &format!("keep_alive: 5s{extra} }}"))
}

#[test]
fn tls_and_mutual_tls_connect_and_every_refusal_says_why() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let plc = plc.addr.to_string();
    let dir = open_tempdir();
    let c = dir.path().join("certs");
    test_certs(&c);
    let broker = tls_broker(&c, "server");
    let expired_broker = tls_broker(&c, "expired-server");
    let cp = |f: &str| c.join(f).display().to_string();
    let tls = |ca: &str, cert: Option<&str>| match cert {
        Some(name) => format!(
            ", tls: {{ ca: {}, cert: {}, key: {} }}",
            cp(ca),
            cp(&format!("{name}.pem")),
            cp(&format!("{name}.key"))
        ),
        None => format!(", tls: {{ ca: {} }}", cp(ca)),
    };
    let sub = Decoder::start(
        broker.port,
        &["linesight/#"],
        &["--tls-ca", &cp("ca.pem"), "--tls-cert", &cp("client.pem"), "--tls-key", &cp("client.key")],
    );

    // (name, broker port, tls keys, what the log must say)
    let cases = [
        ("good", broker.port, tls("ca.pem", Some("client")), "MQTT connected"),
        (
            "expired-client",
            broker.port,
            tls("ca.pem", Some("expired-client")),
            "refused our client certificate: it has expired",
        ),
        ("wrong-ca-client", broker.port, tls("ca.pem", Some("wrong-ca-client")), "does not know the CA that signed it"),
        ("no-client-cert", broker.port, tls("ca.pem", None), "requires a client certificate"),
        (
            "unknown-server-ca",
            broker.port,
            tls("other-ca.pem", Some("client")),
            "not signed by the CA in mqtt.tls.ca (unknown CA)",
        ),
        ("expired-server", expired_broker.port, tls("ca.pem", Some("client")), "the certificate of broker"),
    ];
    let mut running = Vec::new();
    for (name, port, keys, _) in &cases {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let cfg = write_config(&d, &node(&plc, *port, &format!("tls-{name}"), keys));
        let log = d.join("daemon.log");
        running.push((run_daemon(&cfg, &log), log));
    }
    for ((_, _, _, expect), (_child, log)) in cases.iter().zip(&running) {
        assert!(
            wait_log(log, Duration::from_secs(20), |l| l.contains(expect)),
            "expected `{expect}` in the log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    let expired = std::fs::read_to_string(&running[5].1).unwrap();
    assert!(expired.contains("has expired"), "{expired}");
    assert!(
        sub.wait(Duration::from_secs(10), |m| m.iter().any(|m| m["topic"]
            .as_str()
            .unwrap()
            .ends_with("/availability")
            && m["payload"]["text"] == "online")),
        "nothing arrived over mutual TLS"
    );
}

#[test]
fn bad_credentials_and_acl_refusals_are_reported() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let plc = plc.addr.to_string();
    let dir = open_tempdir();
    let passwd = dir.path().join("passwd");
    let st =
        Command::new("mosquitto_passwd").arg("-b").arg("-c").arg(&passwd).args(["cell", "s3cret"]).status().unwrap();
    assert!(st.success());
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The node may publish under its own subtree and read nothing: its command subscription is refused.
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user cell\ntopic write linesight/#\n").unwrap();
    std::fs::set_permissions(&acl, std::fs::Permissions::from_mode(0o644)).unwrap();
    let broker = Broker::start_configured(&format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}",
        passwd.display(),
        acl.display()
    ))
    .unwrap();
    let mut children = Vec::new();
    for (name, password, expect) in [
        ("wrong-password", "guess", "refused the user name or password"),
        // mosquitto 2.0.11 grants a subscription its ACL forbids (it filters at
        // delivery), so there is no refusal to report: the node connects,
        // publishes what it may, and never sees the commands.
        ("acl", "s3cret", "MQTT connected"),
    ] {
        let d = dir.path().join(format!("node-{name}"));
        std::fs::create_dir_all(&d).unwrap();
        let extra = format!(", username: cell, password: {password}");
        let cfg = write_config(&d, &node(&plc, broker.port, &format!("cred-{name}"), &extra));
        let log = d.join("daemon.log");
        children.push((run_daemon(&cfg, &log), log, expect));
    }
    for (child, log, expect) in &mut children {
        let found = wait_log(log, Duration::from_secs(20), |l| {
            l.contains(*expect) || (*expect == "refused the user name or password" && l.contains("not authorised"))
        });
        assert!(found, "expected `{expect}`:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        assert!(child.try_wait().unwrap().is_none(), "a refusal must not stop the daemon");
    }
    // Subscribed by now (its SUBSCRIBE goes right after CONNACK): a command the ACL forbids it to read.
    std::thread::sleep(Duration::from_millis(500));
    publish_as(
        broker.port,
        "linesight/test-line/cell-1/commands",
        r#"{"id":1,"command":"enable-task","task":"inspect"}"#,
    );
    std::thread::sleep(Duration::from_secs(1));
    let acl_log = std::fs::read_to_string(&children[1].1).unwrap();
    assert!(!acl_log.contains("command executed"), "a command the ACL forbids reached the node: {acl_log}");
}

/// Publish with the test broker's credentials.
fn publish_as(port: u16, topic: &str, payload: &str) {
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-u", "cell", "-P", "s3cret", "-t", topic, "-m", payload])
        .status()
        .unwrap();
    assert!(st.success());
}

fn publish(port: u16, topic: &str, payload: &str, retain: bool) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-m", payload, "-q", "1"]);
    if retain {
        cmd.arg("-r");
    }
    assert!(cmd.status().unwrap().success());
}

#[test]
fn json_commands_are_answered_by_id_and_refused_with_reasons() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let base = "linesight/test-line/cell-1";
    // A retained command left on the broker before the daemon starts must never fire.
    publish(
        broker.port,
        &format!("{base}/commands"),
        r#"{"id":"stale","command":"disable-task","task":"inspect"}"#,
        true,
    );
    let sub = Subscriber::start(broker.port, &format!("{base}/#"));
    let dir = tempfile::tempdir().unwrap();
    // This task may be disabled by command (refused by default: see command_limits.rs).
    let yaml = node_yaml(&plc.addr.to_string(), broker.port, "loop: true", 10.0)
        .replace("    reject: {", "    commands: { allow_disable: true }\n    reject: {");
    let cfg = write_config(dir.path(), &with_state_dir(&yaml, dir.path()));
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    assert!(
        sub.wait_for(|t, p| t.ends_with("/cameras/top/status") && p.contains("\"online\""), Duration::from_secs(30))
    );

    let cmd = |payload: &str| publish(broker.port, &format!("{base}/commands"), payload, false);
    let answer = |id: &str| -> Value {
        let id = json!(id);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(a) = sub.messages("/commands/response").into_iter().find(|a| a["id"] == id) {
                return a;
            }
            assert!(Instant::now() < deadline, "no answer to {id}: {:?}", sub.raw("/commands/response"));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    cmd(r#"{"id":"t1","command":"set-threshold","task":"inspect","threshold":0.8}"#);
    assert_eq!(answer("t1"), json!({"id": "t1", "ok": true}));
    assert!(sub.wait_for(|t, p| t.ends_with("/stats") && p.contains("\"ng_threshold\":0.8"), Duration::from_secs(10)));
    cmd(r#"{"id":"t2","command":"set-threshold","task":"inspect","threshold":7}"#);
    assert!(answer("t2")["error"].as_str().unwrap().contains("out of range"));
    cmd(r#"{"id":"t3","command":"set-threshold","task":"inspect","threshold":0.5,"force":true}"#);
    assert!(answer("t3")["error"].as_str().unwrap().contains("unknown field `force`"));
    cmd(r#"{"id":"t4","command":"open-all-valves"}"#);
    assert!(answer("t4")["error"].as_str().unwrap().contains("unknown command `open-all-valves`"));
    cmd(r#"{"id":"t5","command":"set-point","point":"nothing","value":1}"#);
    assert!(answer("t5")["error"].as_str().unwrap().contains("no point `nothing`"));
    cmd(&format!(r#"{{"id":"t6","command":"rebirth","pad":"{}"}}"#, "x".repeat(5000)));
    cmd("{not json");
    cmd(r#"{"id":"t7","command":"disable-task","task":"inspect"}"#);
    assert_eq!(answer("t7")["ok"], true);
    let before = sub.messages("/result").len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sub.messages("/result")[before..].iter().any(|r| r["verdict"] == "ERROR") {
        assert!(Instant::now() < deadline, "a disabled task gives ERROR");
        std::thread::sleep(Duration::from_millis(50));
    }
    cmd(r#"{"id":"t8","command":"enable-task","task":"inspect"}"#);
    assert_eq!(answer("t8")["ok"], true);
    let refusals = sub.messages("/commands/response").iter().filter(|a| a["ok"] == false).count();
    assert!(refusals >= 6, "oversized and unreadable commands are answered too: {:?}", sub.raw("/commands/response"));
    assert!(sub.messages("/commands/response").iter().all(|a| a["id"] != "stale"), "a retained command was executed");
    assert!(child.try_wait().unwrap().is_none(), "bad commands must not stop the daemon");
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(audit.contains("retained command ignored"), "{audit}");
    assert!(audit.contains("command refused"));
    publish(broker.port, &format!("{base}/commands"), "", true);
}
