//! Nothing judged may pass after a crash.
//!
//! While the node runs, a marker file `running` sits in `runtime.state_dir`; a stop that ends
//! in order with every output confirmed safe removes it. Found at start, it means the last run
//! ended uncleanly (a kill, a crash, a power cut): parts between the camera and the gate were
//! judged by a process that is gone, or never judged, and the PLC keeps no record of which to
//! throw out. So every reject gate is held in reject, continuously, from the moment the cameras
//! run again for one travel (`reject.purge`, by default the gate's delay plus its pulse, or its
//! encoder distance): whatever is on the belt at restart goes out, counted (`purges`) and logged.
//! The travel is counted as the belt moves: time stands still while the line-running input says
//! the line stands.
//!
//! Only a restart purges. Within a running node every fault already ends in a reject: a part
//! whose frame, inference or verdict is lost to a fault gets ERROR at its deadline, and ERROR is
//! thrown out. What a purge adds is for knowledge that died with a process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Config, RejectConfig};
use crate::decision::reject::{Arrival, Gate};
use crate::part::sample::Position;

/// A gate placed by encoder distance and no `purge`: hold it this long.
const DISTANCE_PURGE: Duration = Duration::from_secs(10);

/// The marker of a running node.
pub struct Marker {
    path: PathBuf,
    /// The marker was there at start: the last run did not stop in order.
    pub unclean: bool,
}

impl Marker {
    /// Note that the node runs, and whether the last run ended uncleanly. A marker that cannot
    /// be written is logged, not fatal (the state directory may be read-only): the next start
    /// then cannot tell, so it purges as if it had crashed only when the file is there.
    pub fn take(state_dir: &Path) -> Marker {
        let path = state_dir.join("running");
        let unclean = path.exists();
        let written = std::fs::create_dir_all(state_dir).and_then(|_| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&path)?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()
        });
        if let Err(e) = written {
            tracing::error!(marker = %path.display(), error = %e, "cannot write the run marker; after a crash the gates would not be purged: make runtime.state_dir writable");
        }
        Marker { path, unclean }
    }

    /// The stop ended in order, outputs confirmed safe: the next start needs no purge.
    pub fn clear(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(marker = %self.path.display(), error = %e, "cannot remove the run marker; the next start will purge the gates");
        }
    }
}

/// How far a task's gate is held after an unclean stop: `reject.purge` (a time), else the
/// gate's delay plus its pulse, else (a gate placed by encoder distance) the distance itself,
/// counted from where the encoder is now; with no encoder reading yet, [`DISTANCE_PURGE`].
pub fn purge_until(reject: &RejectConfig, encoder: Option<&Position>) -> Arrival {
    let now = tokio::time::Instant::now();
    match (reject.purge, reject.delay, reject.distance, encoder) {
        (Some(p), ..) => Arrival::Time(now + p.get()),
        (None, Some(d), ..) => Arrival::Time(now + d.get() + reject.pulse.get()),
        (None, None, Some(n), Some(p)) => Arrival::Counts(p.at_time(now).round() as i64 + n as i64),
        _ => Arrival::Time(now + DISTANCE_PURGE),
    }
}

/// Hold every gate in reject for one travel, from now (call it when the cameras run). Time
/// stands still while the line stands (the gate counts it as it counts a part's travel).
pub async fn purge(config: &Config, gates: &[(String, Gate)], encoder: Option<&watch::Receiver<Option<Position>>>) {
    for (task, gate) in gates {
        let Some(reject) = config.tasks.get(task).and_then(|t| t.reject.as_ref()) else { continue };
        let position = encoder.and_then(|e| *e.borrow());
        let until = purge_until(reject, position.as_ref());
        match gate.hold(until).await {
            Ok(()) => tracing::warn!(
                task = %task, output = %reject.output, until = ?until,
                "the last run did not stop in order: reject gate held on for one travel, so no part judged before it (or never judged) passes"
            ),
            Err(e) => {
                tracing::error!(task = %task, output = %reject.output, error = %e, "the gate could not be held on for the purge after an unclean stop")
            }
        }
    }
}
