//! The `mqtt` section: the broker, the durable queue, the failover brokers,
//! the TLS files and Sparkplug B.

use std::collections::BTreeMap;
use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::super::diagnostic::Collector;
use super::super::types::*;

/// Everything under `mqtt`, in the order the keys are usually written.
pub(super) fn check(config: &Config, mqtt: &MqttConfig, c: &mut Collector) {
    broker(mqtt, c);
    failover(mqtt, c);
    if let Some(tls) = &mqtt.tls {
        tls_files(tls, c);
    }
    sparkplug(config, mqtt, c);
}

/// The primary broker's address, the topic prefix and the session timing.
fn broker(mqtt: &MqttConfig, c: &mut Collector) {
    if mqtt.host.trim().is_empty() {
        c.at(&["mqtt", "host"], "the broker host is empty", "give the broker's host name or IP address");
    }
    if mqtt.port == 0 {
        c.at(&["mqtt", "port"], "port 0 is not a broker port", "use the broker's port, usually 1883 (or 8883 for TLS)");
    }
    if mqtt.prefix.is_empty() || mqtt.prefix.contains(['+', '#']) || mqtt.prefix.starts_with('/') {
        c.at(
            &["mqtt", "prefix"],
            format!("`{}` cannot start MQTT topics", mqtt.prefix),
            "use a plain name such as `linesight`: no wildcards, no leading `/`",
        );
    }
    let ka = mqtt.keep_alive.get().as_secs_f64();
    if !(1.0..=65535.0).contains(&ka) {
        c.at(
            &["mqtt", "keep_alive"],
            format!("keep-alive {} is out of range", mqtt.keep_alive),
            "use 1s to 18h; 5s to 15s suits a factory network",
        );
    }
    if let Some(q) = &mqtt.queue {
        queue(q, c);
    }
    if mqtt.stats_interval.get().as_millis() < 100 {
        c.at(&["mqtt", "stats_interval"], "stats interval below 100ms", "use 1s or more");
    }
}

/// The durable queue: a size it can hold, a folder, and a bounded loss on a power cut.
fn queue(q: &QueueConfig, c: &mut Collector) {
    if q.max_mb == 0 || q.max_mb > 1 << 20 {
        c.at(&["mqtt", "queue", "max_mb"], format!("{} MiB is out of range", q.max_mb), "use 1 to 1048576 MiB");
    }
    if q.fsync_every.get().as_secs() > 60 {
        c.at(
            &["mqtt", "queue", "fsync_every"],
            format!("{} would lose up to that much on a power cut", q.fsync_every),
            "use 0ms to 60s; 200ms is usual",
        );
    }
    if !(1..=MAX_QUEUE_INFLIGHT).contains(&q.inflight) {
        c.at(
            &["mqtt", "queue", "inflight"],
            format!("{} messages in flight is out of range", q.inflight),
            format!("use 1 to {MAX_QUEUE_INFLIGHT}; 1024 is the default"),
        );
    }
    if q.dir.as_os_str().is_empty() {
        c.at(&["mqtt", "queue", "dir"], "the queue folder is empty", "give a folder, e.g. /var/lib/linesight/queue");
    }
}

/// The failover brokers: each a usable address, none the primary, none twice.
fn failover(mqtt: &MqttConfig, c: &mut Collector) {
    let primary = (mqtt.host.trim().to_ascii_lowercase(), mqtt.port);
    let mut seen: Vec<(String, u16)> = Vec::new();
    for (i, broker) in mqtt.failover.iter().enumerate() {
        let idx = i.to_string();
        let path = ["mqtt", "failover", idx.as_str()];
        if !failover_address_usable(i, broker, &path, c) {
            continue;
        }
        let addr = (broker.host.trim().to_ascii_lowercase(), broker.port);
        let shown = format!("{}:{}", broker.host.trim(), broker.port);
        if addr == primary {
            c.at(
                &path,
                format!("failover broker {shown} is the primary broker (`mqtt.host`/`mqtt.port`)"),
                "remove it: the primary is always tried first; list only the other brokers under `failover`",
            );
        } else if let Some(first) = seen.iter().position(|a| *a == addr) {
            c.at(
                &path,
                format!("failover broker {shown} is listed twice (entries {first} and {i})"),
                "remove the second entry: each broker is listed once, in the order they are tried",
            );
        }
        seen.push(addr);
    }
}

/// Failover broker `i` has a host and a port; reports what it lacks.
fn failover_address_usable(i: usize, broker: &BrokerAddr, path: &[&str], c: &mut Collector) -> bool {
    let at = |k: &'static str| [path, &[k]].concat();
    let mut usable = true;
    if broker.host.trim().is_empty() {
        c.at(
            &at("host"),
            format!("failover broker {i} has an empty host"),
            "give the broker's host name or IP address, or remove the entry",
        );
        usable = false;
    }
    if broker.port == 0 {
        c.at(
            &at("port"),
            format!("port 0 of failover broker {i} is not a broker port"),
            "use the broker's port, usually 1883 (or 8883 for TLS)",
        );
        usable = false;
    }
    usable
}

/// `cert` and `key` go together, and the files must make a TLS client
/// configuration here and now: [`tls_problem`] checks what the MQTT session
/// checks when it builds its TLS setup, so a file that would stop the session
/// stops check-config instead. A missing file is an error even when
/// check-config runs on another machine than the node: copy the files there
/// too, or check on the node itself.
fn tls_files(tls: &TlsConfig, c: &mut Collector) {
    let unpaired = match (&tls.cert, &tls.key) {
        (Some(_), None) => Some((
            "cert",
            "`mqtt.tls.cert` is given without `key`",
            "add `key:` (the PEM private key of the client certificate) for mutual TLS, or remove `cert`",
        )),
        (None, Some(_)) => Some((
            "key",
            "`mqtt.tls.key` is given without `cert`",
            "add `cert:` (the PEM client certificate of this key) for mutual TLS, or remove `key`",
        )),
        _ => None,
    };
    if let Some((key, message, hint)) = unpaired {
        c.at(&["mqtt", "tls", key], message, hint);
    }
    // An unpaired `cert` or `key` is not read, but the CA still is, so that its
    // problem is not reported one run later.
    let pair = if unpaired.is_some() { None } else { tls.cert.as_deref().zip(tls.key.as_deref()) };
    let Err(message) = tls_problem(&tls.ca, pair) else { return };
    let (key, hint) = tls_hint(tls, &message);
    let path: &[&str] = if key.is_empty() { &["mqtt", "tls"] } else { &["mqtt", "tls", key] };
    c.at(path, format!("TLS: {message}"), hint);
}

/// The first problem of the TLS files, in the words the MQTT session would
/// use: the CA file holds certificates rustls accepts as trust anchors; the
/// client certificate file holds a chain, the key file a private key that
/// rustls can sign with (ring: RSA, ECDSA P-256/P-384, Ed25519), and the key
/// belongs to the first certificate of the chain.
fn tls_problem(ca: &Path, pair: Option<(&Path, &Path)>) -> Result<(), String> {
    let cas = read_certs(ca)?;
    if cas.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file (mqtt.tls.ca must be the CA's certificate)",
            ca.display()
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in cas {
        roots.add(cert).map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    let Some((cert, key)) = pair else { return Ok(()) };
    let chain = read_certs(cert)?;
    if chain.is_empty() {
        return Err(format!("{}: no PEM certificate in the file (mqtt.tls.cert)", cert.display()));
    }
    let key_der = read_key(key)?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key_der, &provider)
        .map_err(|e| format!("{} and {}: the key does not fit the certificate: {e}", cert.display(), key.display()))?;
    Ok(())
}

/// Every PEM certificate in the file at `path` (none is not an error here).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not valid PEM: {e}", path.display()))
}

/// The first PEM private key (PKCS#8, PKCS#1 or SEC1) in the file at `path`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{}: not valid PEM: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no private key in the file (PKCS#8, PKCS#1 or SEC1 PEM expected)", path.display()))
}

/// The key under `mqtt.tls` that a [`tls_problem`] message is about (it starts
/// with that file's path), and how to fix it.
fn tls_hint(tls: &TlsConfig, message: &str) -> (&'static str, &'static str) {
    let names = |p: &Path| message.starts_with(&format!("{}: ", p.display()));
    let pair = tls.cert.as_deref().zip(tls.key.as_deref());
    if pair.is_some_and(|(cert, key)| message.starts_with(&format!("{} and {}: ", cert.display(), key.display()))) {
        ("key", "use the private key that belongs to `cert` (or the certificate that belongs to `key`)")
    } else if names(&tls.ca) {
        (
            "ca",
            "point `ca` at the PEM certificate of the CA that signed the broker's certificate; \
             check-config reads it, so it must also exist where check-config runs",
        )
    } else if tls.key.as_deref().is_some_and(names)
        // `cert` and `key` may be one file holding both: then the message says which is missing.
        && (message.contains("private key") || !tls.cert.as_deref().is_some_and(names))
    {
        ("key", "point `key` at the unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`")
    } else if tls.cert.as_deref().is_some_and(names) {
        ("cert", "point `cert` at the PEM client certificate (chain) the broker accepts")
    } else {
        ("", "check the files under `mqtt.tls`: a PEM CA certificate, and for mutual TLS a PEM certificate and its key")
    }
}

/// Sparkplug B: the report interval, and the ids that become topic levels.
/// `node.group_id` and `node.node_id` are checked by [`super::node::identity`] for every dialect.
fn sparkplug(config: &Config, mqtt: &MqttConfig, c: &mut Collector) {
    let sp = &mqtt.sparkplug;
    if sp.report_every.get() < std::time::Duration::from_millis(100) {
        c.at(
            &["mqtt", "sparkplug", "report_every"],
            format!("report interval {} is below 100ms", sp.report_every),
            "use 1s (the default) or more; changes are reported by exception at this rate",
        );
    }
    if !mqtt.dialect.sparkplug() {
        return;
    }
    if let Some(host) = &sp.primary_host {
        primary_host(host, c);
    }
    if mqtt.dialect == Dialect::Both {
        session_client_ids(config, mqtt, c);
    }
    device_ids(config, c);
}

/// The SCADA host id whose STATE messages gate the births.
fn primary_host(host: &str, c: &mut Collector) {
    if host.is_empty() || host.contains(['/', '+', '#']) {
        c.at(
            &["mqtt", "sparkplug", "primary_host"],
            if host.is_empty() {
                "the Sparkplug primary host id is empty".to_string()
            } else {
                format!("`{host}` cannot be a Sparkplug host id")
            },
            "use the SCADA host's id as it publishes `spBv1.0/STATE/<id>`: not empty, no `/`, `+` or `#` \
             (Sparkplug 3.0, 1.4.1.8)",
        );
    }
}

/// With `dialect: both` there are two sessions, which need two client ids.
fn session_client_ids(config: &Config, mqtt: &MqttConfig, c: &mut Collector) {
    let sp = &mqtt.sparkplug;
    let (group, node) = (&config.node.group_id, &config.node.node_id);
    let json_id = mqtt.client_id.clone().unwrap_or_else(|| format!("linesight-{group}-{node}"));
    let sp_id = sp.client_id.clone().unwrap_or_else(|| format!("linesight-sp-{group}-{node}"));
    if json_id == sp_id {
        let at: &[&str] =
            if sp.client_id.is_some() { &["mqtt", "sparkplug", "client_id"] } else { &["mqtt", "client_id"] };
        c.at(
            at,
            format!(
                "the JSON and the Sparkplug session both use client id `{sp_id}`: with `dialect: both` the \
                 broker would drop one session each time the other connects"
            ),
            "give `mqtt.sparkplug.client_id` an id of its own, or remove it (the default is \
             `linesight-sp-<group_id>-<node_id>`)",
        );
    }
}

/// Every task and every Modbus device is a Sparkplug device, its name the device id.
/// Names are already restricted to letters, digits, `-` and `_` (so no `/`, `+`
/// or `#`); what is left is that ids must not collide ignoring case (Sparkplug 3.0, 5.2).
fn device_ids(config: &Config, c: &mut Collector) {
    let mut ids: Vec<(usize, usize, &str, &str, Vec<&str>)> = Vec::new();
    for name in config.tasks.keys() {
        let path = vec!["tasks", name.as_str()];
        let m = c.mark_of(&path);
        ids.push((m.line, m.col, "task", name, path));
    }
    for name in config.modbus.devices.keys() {
        let path = vec!["modbus", "devices", name.as_str()];
        let m = c.mark_of(&path);
        ids.push((m.line, m.col, "Modbus device", name, path));
    }
    ids.sort_by_key(|&(line, col, ..)| (line, col));
    let mut seen: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for (_, _, kind, name, path) in &ids {
        match seen.get(&name.to_lowercase()) {
            Some((first_kind, first)) => c.at(
                path,
                format!(
                    "{kind} `{name}` and {first_kind} `{first}` would be the same Sparkplug device id: \
                     device ids must differ in more than letter case"
                ),
                "rename one of them: with `dialect: sparkplug` or `both`, every task and Modbus device name \
                 is a Sparkplug device id (Sparkplug 3.0, 5.2)",
            ),
            None => {
                seen.insert(name.to_lowercase(), (kind, name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_that_are_not_what_they_should_be() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let problem = |ca: &Path| tls_problem(ca, None).unwrap_err();
        assert!(problem(&dir.path().join("missing.pem")).contains("missing.pem: cannot read: "));
        let junk = file("junk.pem", "not a certificate\n");
        assert!(problem(&junk).contains("junk.pem: no PEM certificate in the file (mqtt.tls.ca"));
        let bad_der = file("bad.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        assert!(problem(&bad_der).contains("bad.pem: not a usable CA certificate"));
        assert!(read_key(&junk).unwrap_err().contains("junk.pem: no private key in the file"));
    }
}
