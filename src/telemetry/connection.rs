//! What both MQTT sessions (the JSON one and the Sparkplug one) share: the
//! broker list and failover order, connection options (TLS, credentials,
//! packet size), reconnect backoff, and an explanation of why a broker
//! refused us that a technician can act on.
//!
//! Every connection attempt gets a fresh rumqttc client and event loop.
//! Requests still sitting in an old client's channel would otherwise be sent
//! on the next connection: stale births with old sequence numbers, or queue
//! messages whose packet ids the queue no longer expects.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::Error as MqttBytesError;
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet,
    StateError, SubAck, SubscribeReasonCode, TlsConfiguration, Transport,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use crate::config::{MqttConfig, TlsConfig};
use crate::util::backoff::Backoff;

/// Largest packet we send. The 10 KiB default does not hold a Sparkplug
/// birth or a stats message of a node with many tasks.
pub const MAX_PACKET: usize = 1 << 20;

/// Largest packet we accept. What comes in is commands (refused above 4 KiB
/// anyway, with a reason, so a little over that must still be read) and
/// Sparkplug STATE; a bigger packet ends the connection (rumqttc's rule) and
/// the session reconnects. With [`INCOMING_BUFFER`] this bounds what the
/// outside can make the node hold to 1 MiB.
pub const MAX_INCOMING_PACKET: usize = 64 << 10;

/// QoS 1 messages of a session's own (not from its disk queue) in flight at once: rumqttc's
/// default, the whole window of a session without a queue.
pub const OWN_INFLIGHT: u16 = 100;

/// Incoming messages waiting for the command door; more are dropped and logged.
pub const INCOMING_BUFFER: usize = 16;

/// One broker of the configured list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// `host`/`port` first, then the `failover` list, in order.
pub fn servers(cfg: &MqttConfig) -> Vec<Server> {
    std::iter::once(Server { host: cfg.host.clone(), port: cfg.port })
        .chain(cfg.failover.iter().map(|b| Server { host: b.host.clone(), port: b.port }))
        .collect()
}

/// Options for one connection attempt to `server`. TLS material is read
/// when the session starts (see [`tls_client_config`]), not per attempt.
pub fn options(cfg: &MqttConfig, server: &Server, client_id: &str, tls: Option<&Arc<ClientConfig>>) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, server.host.clone(), server.port);
    opts.set_keep_alive(cfg.keep_alive.get());
    opts.set_clean_session(true);
    opts.set_max_packet_size(MAX_INCOMING_PACKET, MAX_PACKET);
    // The disk queue's window, and room beside it for the session's own QoS 1 messages
    // (availability, stats, answers): a full window never holds those back.
    let queue_window = cfg.queue.as_ref().map_or(0, |q| q.inflight);
    opts.set_inflight(queue_window.saturating_add(OWN_INFLIGHT));
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        opts.set_credentials(u.clone(), p.expose());
    }
    if let Some(tls) = tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
    }
    opts
}

/// The rustls client configuration for `mqtt.tls`: the CA file as the only
/// trust anchor (a plant's private CA, not the public web's), and the
/// client certificate for mutual TLS. Errors name the file and what is wrong.
pub fn tls_client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let cas = read_certs(&tls.ca)?;
    if cas.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file (mqtt.tls.ca must be the CA's certificate)",
            tls.ca.display()
        ));
    }
    for ca in cas {
        roots.add(ca).map_err(|e| format!("{}: not a usable CA certificate: {e}", tls.ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            if chain.is_empty() {
                return Err(format!("{}: no PEM certificate in the file (mqtt.tls.cert)", cert.display()));
            }
            let key_der = read_key(key)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!("{} and {}: the key does not fit the certificate: {e}", cert.display(), key.display())
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("mqtt.tls: `cert` and `key` go together (both for mutual TLS, or neither)".into()),
    };
    Ok(Arc::new(config))
}

pub fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not valid PEM: {e}", path.display()))
}

pub fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{}: not valid PEM: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no private key in the file (PKCS#8, PKCS#1 or SEC1 PEM expected)", path.display()))
}

/// Drive a fresh event loop through CONNECT/CONNACK, and nothing else.
///
/// `EventLoop::poll` is not cancel-safe while it connects: polled inside a
/// `select!` whose other branch wins half-way, it drops the socket after the
/// CONNECT went out, the broker publishes our Will (`offline`, or NDEATH),
/// and the next poll connects again. Subscribers then saw a death right
/// before the birth. Connecting alone, then selecting, avoids it; rumqttc's
/// own connection timeout (5 s) bounds the wait.
pub async fn connect(eventloop: &mut EventLoop) -> Result<ConnAck, ConnectionError> {
    loop {
        if let Event::Incoming(Packet::ConnAck(ack)) = eventloop.poll().await? {
            return Ok(ack);
        }
    }
}

/// When a connection is given up for silence: 1.5 x keep-alive after the last packet heard from
/// the broker (any packet: a PINGRESP at the latest). rumqttc sends a PINGREQ every keep-alive
/// and, on its own, only fails when the next one is due with the last still unanswered: up to
/// 2 x keep-alive after the link died. The broker answers a PINGREQ within a round trip, so a live
/// link is never silent for more than a keep-alive plus a round trip; 1.5 x leaves half a
/// keep-alive for the round trip, and matches the broker's side (MQTT 3.1.1 §3.1.2.10: it drops
/// a client silent for 1.5 x keep-alive, and publishes its Will).
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    keep_alive: Duration,
    last_heard: tokio::time::Instant,
}

impl Liveness {
    /// From the CONNACK, just received.
    pub fn new(keep_alive: Duration) -> Self {
        Liveness { keep_alive, last_heard: tokio::time::Instant::now() }
    }

    /// Something came from the broker.
    pub fn heard(&mut self) {
        self.last_heard = tokio::time::Instant::now();
    }

    /// Past this instant without a packet from the broker, the link is dead.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.last_heard + self.keep_alive * 3 / 2
    }

    /// For the log: how long the broker has been silent.
    pub fn silent_for(&self) -> Duration {
        self.last_heard.elapsed()
    }
}

/// How one connection of a session ended.
pub enum Ended {
    /// The stop is complete.
    Stopped,
    /// The link failed (or never came up); try the next broker.
    Failed { was_connected: bool },
}

/// Request DISCONNECT and poll (at most 500 ms) until it has gone out.
pub async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                _ => {}
            }
        }
    })
    .await;
}

/// Why a PUBLISH from the broker breaks MQTT 3.1.1's rules for a topic name, if it does: empty
/// (4.7.3-1), a wildcard (3.3.2-2) or a NUL character (1.5.3-2). rumqttc passes such a topic on;
/// both sessions drop the connection instead (4.8: close it on a protocol violation), logging the
/// broker and the topic.
pub fn bad_topic(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        Some("with an empty topic")
    } else if topic.contains(['+', '#']) {
        Some("with a wildcard in its topic")
    } else if topic.contains('\0') {
        Some("with a NUL character in its topic")
    } else {
        None
    }
}

/// Whether the broker refused one of the topics of a SUBSCRIBE (its ACL).
pub fn refused(ack: &SubAck) -> bool {
    ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure))
}

/// Why a connection to `server` failed, said so that it can be fixed.
pub fn explain(e: &ConnectionError, server: &Server) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => format!(
                "broker {server} refused the user name or password (check mqtt.username / mqtt.password)"
            ),
            ConnectReturnCode::NotAuthorized => format!(
                "broker {server} refused the connection: not authorised (its ACL or authentication does not admit this client)"
            ),
            ConnectReturnCode::BadClientId => {
                format!("broker {server} refused the client id (check mqtt.client_id)")
            }
            ConnectReturnCode::ServiceUnavailable => format!("broker {server} is unavailable (it refused with 3)"),
            other => format!("broker {server} refused the connection: {other:?}"),
        },
        ConnectionError::NetworkTimeout => {
            format!("broker {server} did not answer in time (network down, or a firewall drops the packets)")
        }
        // What the broker sent cannot be read as MQTT (I/O errors, TLS alerts among them, are
        // explained below). The connection is dropped: after a malformed packet the stream is
        // out of step, and MQTT 3.1.1 (4.8) says to close it.
        ConnectionError::MqttState(StateError::Deserialization(e)) if !matches!(e, MqttBytesError::Io(_)) => match e {
            MqttBytesError::PayloadSizeLimitExceeded(n) => format!(
                "broker {server} sent a packet of {n} bytes, over linesight's limit of {MAX_INCOMING_PACKET} (commands are at most 4 KiB); the connection is dropped"
            ),
            e => format!("broker {server} sent a malformed MQTT packet ({e}); the connection is dropped"),
        },
        other => {
            // TLS and socket errors arrive wrapped at different depths
            // (`Tls`, `Io`, `MqttState(Io)`, `MqttState(Deserialization(Io))`
            // for an alert read while waiting for CONNACK): walk the chain.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(other);
            while let Some(e) = cause {
                if let Some(t) = e.downcast_ref::<rustls::Error>() {
                    return explain_tls(t, server);
                }
                if let Some(io) = e.downcast_ref::<std::io::Error>() {
                    return explain_io(io, server);
                }
                cause = e.source();
            }
            format!("connection to {server} failed: {other}")
        }
    }
}

fn explain_io(io: &std::io::Error, server: &Server) -> String {
    if let Some(t) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        return explain_tls(t, server);
    }
    match io.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("nothing accepts connections at {server} (check mqtt.host/port and that the broker runs)")
        }
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof => format!(
            "broker {server} closed the connection ({io}); if it expects TLS, configure mqtt.tls; if it requires a client certificate, configure mqtt.tls.cert and key"
        ),
        _ => format!("connection to {server} failed: {io}"),
    }
}

fn explain_tls(t: &rustls::Error, server: &Server) -> String {
    match t {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "the certificate of broker {server} is not signed by the CA in mqtt.tls.ca (unknown CA)"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the certificate of broker {server} has expired: renew it on the broker")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
                "the certificate of broker {server} is not valid yet (check this device's clock)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "the certificate of broker {server} is not issued for `{}` (use the name in its certificate as mqtt.host)",
                server.host
            ),
            CertificateError::Revoked => format!("the certificate of broker {server} is revoked"),
            other => format!("the certificate of broker {server} is refused: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateExpired => {
                format!("broker {server} refused our client certificate: it has expired (renew mqtt.tls.cert)")
            }
            AlertDescription::UnknownCA => format!(
                "broker {server} refused our client certificate: it does not know the CA that signed it"
            ),
            AlertDescription::CertificateRequired => format!(
                "broker {server} requires a client certificate: configure mqtt.tls.cert and mqtt.tls.key"
            ),
            AlertDescription::BadCertificate | AlertDescription::CertificateUnknown => {
                format!("broker {server} refused our client certificate ({alert:?})")
            }
            AlertDescription::CertificateRevoked => {
                format!("broker {server} refused our client certificate: it is revoked")
            }
            other => format!("broker {server} ended the TLS handshake: {other:?}"),
        },
        other => format!("TLS to {server} failed: {other}"),
    }
}

/// Reconnect delays: exponential from 250 ms to 4 s with ±25 % jitter, reset
/// by a successful connection. rumqttc retries at once otherwise, and a dead
/// broker would make it spin. The cap is low on purpose: after a long outage
/// live data must resume within about 5 s of the broker's return (a 30 s
/// cap made it 9.5 s after a 60 s outage); one attempt every 4 s per node is
/// no load on a broker. The jitter keeps many nodes from reconnecting in
/// lockstep after a broker restart.
pub fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(250), Duration::from_secs(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut b = backoff();
        let first = b.delay();
        assert!(first >= Duration::from_millis(187) && first <= Duration::from_millis(313), "{first:?}");
        for _ in 0..20 {
            let d = b.delay();
            assert!(d <= Duration::from_millis(5_000), "{d:?}");
        }
        let capped = b.delay();
        assert!(capped >= Duration::from_millis(3_000), "{capped:?}");
        b.reset();
        assert!(b.delay() <= Duration::from_millis(313));
    }

    #[test]
    fn refusals_are_explained_however_deeply_wrapped() {
        let s = Server { host: "broker".into(), port: 8883 };
        let bad = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        assert!(explain(&bad, &s).contains("mqtt.username"));
        let unknown = ConnectionError::Tls(rumqttc::TlsError::TLS(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )));
        assert!(explain(&unknown, &s).contains("unknown CA"));
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateExpired),
        );
        assert!(explain(&ConnectionError::Io(alert), &s).contains("expired"));
        // How rumqttc reports an alert read while it waits for CONNACK.
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        let deep = ConnectionError::MqttState(rumqttc::StateError::Deserialization(rumqttc::Error::Io(alert)));
        assert!(explain(&deep, &s).contains("does not know the CA"), "{}", explain(&deep, &s));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(explain(&ConnectionError::Io(refused), &s).contains("broker runs"));
    }

    #[test]
    fn malformed_packets_and_topics_name_the_broker() {
        let s = Server { host: "broker".into(), port: 1883 };
        let bad = |e| ConnectionError::MqttState(rumqttc::StateError::Deserialization(e));
        let e = explain(&bad(rumqttc::Error::MalformedRemainingLength), &s);
        assert_eq!(
            e,
            "broker broker:1883 sent a malformed MQTT packet (Malformed remaining length); the connection is dropped"
        );
        let e = explain(&bad(rumqttc::Error::PayloadSizeLimitExceeded(65537)), &s);
        assert!(e.contains("broker broker:1883 sent a packet of 65537 bytes, over linesight's limit of 65536"), "{e}");
        assert_eq!(bad_topic(""), Some("with an empty topic"));
        assert_eq!(bad_topic("a/+/c"), Some("with a wildcard in its topic"));
        assert_eq!(bad_topic("a/#"), Some("with a wildcard in its topic"));
        assert_eq!(bad_topic("a\0b"), Some("with a NUL character in its topic"));
        assert_eq!(bad_topic("linesight/line/cell/commands"), None);
    }

    #[test]
    fn tls_files_are_named_in_errors() {
        let missing = TlsConfig { ca: "/nonexistent/ca.pem".into(), cert: None, key: None };
        let e = tls_client_config(&missing).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let e = tls_client_config(&TlsConfig { ca: empty, cert: None, key: None }).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
