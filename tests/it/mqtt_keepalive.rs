//! A half-open link (packets silently dropped, no FIN, no RST) is noticed within 1.5 x keep-alive,
//! as docs/mqtt.md says; rumqttc alone notices at the second unanswered ping timer (up to 2 x).
//!
//! A proxy between linesight and the broker forwards both ways until it has passed one PINGRESP
//! to linesight, then drops everything on that connection (both ways) while keeping it open: the
//! worst moment for the client (the link dies right after it last heard the broker). New
//! connections (the reconnect) are forwarded normally. The time from the drop until linesight
//! closes that connection is how long the dead link went unnoticed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;
use linesight::config::{Dur, MqttConfig, NodeIdentity};
use linesight::telemetry::mqtt::Mqtt;

#[derive(Default)]
struct Seen {
    /// When the first connection went dead.
    dropped: Option<Instant>,
    /// When linesight closed the dead connection (gave up on it).
    closed: Option<Instant>,
    /// When each connection was accepted.
    accepted: Vec<Instant>,
}

/// Which way a pipe copies, for what it watches on the first connection.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// linesight to the broker: notes when linesight closes the dead link.
    Up,
    /// The broker to linesight: goes dead after the first PINGRESP.
    Down,
}

/// Copy `from` to `to`; once dead, read and discard both ways (the sockets stay open).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dead: Arc<Mutex<bool>>,
    way: Way,
    watch: Option<Arc<Mutex<Seen>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            // A dead link sends no FIN either: when the broker gives up on us (after its own
            // 1.5 x keep-alive) the client must not hear of it. Hold the socket open.
            Ok(0) | Err(_) if *dead.lock().unwrap() => {
                if let (Way::Up, Some(seen)) = (way, &watch) {
                    seen.lock().unwrap().closed.get_or_insert_with(Instant::now);
                }
                return std::future::pending().await;
            }
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *dead.lock().unwrap() {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if let (Way::Down, Some(seen)) = (way, &watch) {
            if buf[..n].ends_with(&[0xD0, 0x00]) {
                *dead.lock().unwrap() = true;
                seen.lock().unwrap().dropped.get_or_insert_with(Instant::now);
            }
        }
    }
}

async fn proxy(listener: TcpListener, broker: u16, seen: Arc<Mutex<Seen>>) {
    let mut first = true;
    while let Ok((client, _)) = listener.accept().await {
        seen.lock().unwrap().accepted.push(Instant::now());
        let Ok(server) = TcpStream::connect(("127.0.0.1", broker)).await else { return };
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let dead = Arc::new(Mutex::new(false));
        // Only the first connection dies; the reconnects are forwarded as they are.
        let watch = if first { Some(seen.clone()) } else { None };
        first = false;
        tokio::spawn(pipe(cr, sw, dead.clone(), Way::Up, watch.clone()));
        tokio::spawn(pipe(sr, cw, dead, Way::Down, watch));
    }
}

#[test]
fn a_half_open_link_is_noticed_within_one_and_a_half_keep_alives() {
    let broker = Broker::start().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let keep_alive = Duration::from_secs(2);
    let (seen, _mqtt) = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        tokio::spawn(proxy(listener, broker.port, seen.clone()));
        let mut cfg = MqttConfig::new("127.0.0.1", port);
        cfg.keep_alive = Dur::from_millis(keep_alive.as_millis() as u64);
        cfg.client_id = Some("keepalive-test".into());
        let node = NodeIdentity { group_id: "test-line".into(), node_id: "keepalive".into() };
        let (mqtt, _task, _incoming) = Mqtt::start(&cfg, &node, Vec::new(), None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.lock().unwrap().accepted.len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (seen, mqtt)
    });
    let seen = seen.lock().unwrap();
    let dropped = seen.dropped.expect("a PINGRESP went through the proxy");
    let closed = seen.closed.expect("linesight closed the dead connection");
    assert!(seen.accepted.len() >= 2, "linesight connected again after the link died");
    let unnoticed = closed - dropped;
    // 1.5 x keep-alive, plus scheduling on a busy machine.
    let bound = keep_alive * 3 / 2 + Duration::from_millis(300);
    eprintln!("dead link given up after {unnoticed:?} (keep-alive {keep_alive:?}, bound {bound:?})");
    assert!(unnoticed <= bound, "a dead link went unnoticed for {unnoticed:?}; the bound is {bound:?}");
    assert!(unnoticed >= keep_alive, "given up after {unnoticed:?}: a live link with a slow broker would be dropped");
}
