//! A hostile broker (reliability.md item 12): known bad MQTT inputs, sent to the real daemon while
//! it inspects. Each is a packet that broke an MQTT implementation before:
//!
//! - a PUBLISH with a zero-length topic (crashed Mosquitto, CVE-2021-34432);
//! - a remaining length of five continuation bytes (an unchecked remaining length broke Paho,
//!   CVE-2021-41036);
//! - a PUBLISH whose topic length runs past the end of the packet (crashed MQTT-C, #204);
//! - a packet larger than linesight accepts (64 KiB: commands are at most 4 KiB);
//! - garbage: a packet of a reserved type.
//!
//! The broker here is a raw TCP listener that speaks just enough MQTT 3.1.1 to be one (CONNACK,
//! SUBACK, PUBACK, UNSUBACK, PINGRESP), so that it can lie. The node runs both dialects (the JSON
//! session and the Sparkplug session, two MQTT clients). Each client's k-th connection gets the
//! k-th bad input, once the session is up (the JSON session has published a result, the
//! Sparkplug session its NBIRTH); its next connection the next one; the connection after the last
//! is served normally.
//!
//! For every bad input, from each client: the daemon does not crash or hang, drops that connection
//! (the broker sees it close) and connects again (a new CONNECT), logs the problem naming the
//! broker (and the topic, for a bad topic), and keeps inspecting: results arrive on the last
//! connection and the PLC keeps seeing reject pulses. Timings are never asserted: the deadlines
//! are hang guards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;
use linesight::sim::plc::SimPlc;

/// The bad inputs, in the order each client meets them, with what the log must say about each.
fn hostile() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    // A PUBLISH (QoS 0) with a zero-length topic and a command as its payload.
    let mut zero_topic = vec![0x30, 0];
    let body = [&[0u8, 0][..], br#"{"id":1,"command":"rebirth"}"#].concat();
    zero_topic[1] = body.len() as u8;
    zero_topic.extend(body);
    // The topic says 65535 bytes; the packet has 8 more.
    let topic_beyond = [&[0x30u8, 10, 0xFF, 0xFF][..], b"spBv1.0/"].concat();
    // Remaining length 64 KiB + 1, announced; part of the body follows.
    let mut oversized = vec![0x30, 0x81, 0x80, 0x04];
    oversized.extend([0u8, 1, b't']);
    oversized.extend(std::iter::repeat(b'x').take(4096));
    vec![
        ("zero-length topic", zero_topic, "sent a PUBLISH with an empty topic"),
        (
            "remaining-length overflow",
            [&[0x30u8, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F][..], &[0, 1, b't'], &[b'x'; 16]].concat(),
            "sent a malformed MQTT packet (Malformed remaining length)",
        ),
        (
            "topic length beyond the packet",
            topic_beyond,
            "sent a malformed MQTT packet (Promised boundary crossed: 65535)",
        ),
        ("oversized packet", oversized, "sent a packet of 65537 bytes, over linesight's limit of 65536"),
        ("garbage", vec![0xF0, 0x04, 0xDE, 0xAD, 0xBE, 0xEF], "sent a malformed MQTT packet (Invalid packet type: 15)"),
    ]
}

/// One connection as the broker saw it.
#[derive(Debug, Default, Clone)]
struct Conn {
    client: String,
    /// This client's connection number, from 0.
    index: usize,
    /// The bad input sent on it, if any.
    sent: Option<&'static str>,
    /// Results (JSON) and NBIRTHs (Sparkplug) received on it.
    results: usize,
    births: usize,
    /// The client closed it.
    closed: bool,
}

type Seen = Arc<Mutex<Vec<Conn>>>;

/// One MQTT packet from the client: its first byte and its body.
async fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let first = s.read_u8().await?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = s.read_u8().await?;
        len |= usize::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(std::io::Error::other("bad remaining length from the client"));
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok((first, body))
}

fn string_at(b: &[u8], at: usize) -> (String, usize) {
    let n = usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
    (String::from_utf8_lossy(&b[at + 2..at + 2 + n]).into_owned(), at + 2 + n)
}

async fn serve(mut s: TcpStream, seen: Seen, bad: Arc<Vec<(&'static str, Vec<u8>, &'static str)>>) {
    let Ok((0x10, connect)) = read_packet(&mut s).await else { return };
    // Protocol name, level, flags, keep-alive; then the client id.
    let (_, at) = string_at(&connect, 0);
    let (client, _) = string_at(&connect, at + 4);
    let me = {
        let mut seen = seen.lock().unwrap();
        let index = seen.iter().filter(|c| c.client == client).count();
        seen.push(Conn { client: client.clone(), index, ..Conn::default() });
        seen.len() - 1
    };
    let index = seen.lock().unwrap()[me].index;
    if s.write_all(&[0x20, 2, 0, 0]).await.is_err() {
        return;
    }
    let sparkplug = client.starts_with("linesight-sp-");
    loop {
        let Ok((first, body)) = read_packet(&mut s).await else { break };
        let reply: Vec<u8> = match first >> 4 {
            3 => {
                let (topic, at) = string_at(&body, 0);
                let qos = (first >> 1) & 3;
                let ready = {
                    let mut seen = seen.lock().unwrap();
                    let c = &mut seen[me];
                    if topic.ends_with("/result") {
                        c.results += 1;
                    }
                    if topic.contains("/NBIRTH/") {
                        c.births += 1;
                    }
                    let up = if sparkplug { c.births > 0 } else { c.results > 0 };
                    (up && c.sent.is_none()).then(|| bad.get(index)).flatten()
                };
                let mut reply = if qos > 0 { vec![0x40, 2, body[at], body[at + 1]] } else { Vec::new() };
                if let Some((name, bytes, _)) = ready {
                    seen.lock().unwrap()[me].sent = Some(name);
                    reply.extend_from_slice(bytes);
                }
                reply
            }
            // SUBSCRIBE: every filter granted QoS 1.
            8 => {
                let mut at = 2;
                let mut granted = Vec::new();
                while at < body.len() {
                    let (_, next) = string_at(&body, at);
                    at = next + 1;
                    granted.push(1);
                }
                [&[0x90, 2 + granted.len() as u8, body[0], body[1]][..], &granted].concat()
            }
            10 => vec![0xB0, 2, body[0], body[1]],
            12 => vec![0xD0, 0],
            14 => break,
            _ => Vec::new(),
        };
        // A write may fail once the client has given up on the connection (the oversized packet).
        if !reply.is_empty() && s.write_all(&reply).await.is_err() {
            break;
        }
    }
    seen.lock().unwrap()[me].closed = true;
}

#[test]
fn known_bad_mqtt_inputs_drop_the_connection_and_the_node_inspects_on() {
    require_ort();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let bad = Arc::new(hostile());
    let n = bad.len();
    {
        let (seen, bad) = (seen.clone(), bad.clone());
        rt.spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, seen.clone(), bad.clone()));
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let yaml = node_yaml(&plc.addr.to_string(), port, "loop: true", 10.0).replace(
        "stats_interval: 1s, keep_alive: 5s }",
        &format!(
            "stats_interval: 1s, keep_alive: 5s, dialect: both, sparkplug: {{ bdseq_file: {}/bdseq }} }}",
            dir.path().display()
        ),
    );
    assert!(yaml.contains("dialect: both"), "{yaml}");
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let by_client = || {
        let mut m: BTreeMap<String, Vec<Conn>> = BTreeMap::new();
        for c in seen.lock().unwrap().iter() {
            m.entry(c.client.clone()).or_default().push(c.clone());
        }
        m
    };

    // Hang guard: both clients through every bad input, their last connection up and served.
    let deadline = Instant::now() + Duration::from_secs(180);
    let done = |m: &BTreeMap<String, Vec<Conn>>| {
        m.len() == 2
            && m.values().all(|conns| {
                conns.len() > n
                    && conns.last().is_some_and(|last| {
                        if last.client.starts_with("linesight-sp-") {
                            last.births > 0
                        } else {
                            last.results >= 3
                        }
                    })
            })
    };
    while !done(&by_client()) && Instant::now() < deadline {
        assert!(child.try_wait().unwrap().is_none(), "the daemon died: {}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let conns = by_client();
    assert!(done(&conns), "not every client got through every bad input: {conns:#?}\n{}", logs());

    // Inspecting on: the reject gate keeps pulsing after the last bad input.
    let pulses = plc.pulses(10);
    let until = Instant::now() + Duration::from_secs(60);
    while plc.pulses(10) <= pulses && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(plc.pulses(10) > pulses, "no reject pulse after the bad inputs: {}", logs());
    assert!(child.try_wait().unwrap().is_none(), "the daemon died: {}", logs());

    let text = logs();
    for (client, list) in &conns {
        let got: Vec<String> = list
            .iter()
            .map(|c| format!("{} ({} results, {} births)", c.sent.unwrap_or("served"), c.results, c.births))
            .collect();
        eprintln!("{client}: {}", got.join(" -> "));
    }
    let broker = format!("broker 127.0.0.1:{port} ");
    for (client, list) in &conns {
        for (k, (name, _, _)) in bad.iter().enumerate() {
            let c = &list[k];
            assert_eq!(c.sent, Some(*name), "{client}'s connection {k} got `{name}`: {list:#?}");
            assert!(c.closed, "{client} did not drop the connection after `{name}`: {list:#?}\n{text}");
        }
    }
    for (name, _, says) in bad.iter() {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(says) && l.contains(&broker)).collect();
        assert!(
            lines.iter().any(|l| l.contains("Sparkplug")) && lines.iter().any(|l| l.contains("reconnecting")),
            "`{name}`: both sessions log `{broker}... {says}`:\n{text}"
        );
    }
    assert!(text.contains(r#"topic="""#), "the empty topic is named in the log: {text}");
    assert!(!text.contains("panicked"), "{text}");
}
