//! Nothing judged may pass after a crash.
//!
//! While the node runs, a marker file `running` sits in `runtime.state_dir`; a stop that ends
//! in order with every output confirmed safe removes it. Found at start, it means the last run
//! ended uncleanly (a kill, a crash, a power cut): parts between the camera and the gate were
//! judged by a process that is gone, or never judged, and the PLC keeps no record of which to
//! throw out. So every reject gate is held in reject, continuously, from the moment the cameras
//! run again for one travel time (`reject.purge`, by default the gate's delay plus its pulse):
//! whatever is on the belt at restart goes out, counted (`purges`) and logged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, RejectConfig};
use crate::decision::reject::Gate;

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

/// How long a task's gate is held after an unclean stop.
pub fn purge_time(reject: &RejectConfig) -> Duration {
    match (reject.purge, reject.delay) {
        (Some(p), _) => p.get(),
        (None, Some(d)) => d.get() + reject.pulse.get(),
        (None, None) => DISTANCE_PURGE,
    }
}

/// Hold every gate in reject for its purge time, from now (call it when the cameras run).
pub async fn purge(config: &Config, gates: &[(String, Gate)]) {
    for (task, gate) in gates {
        let Some(reject) = config.tasks.get(task).and_then(|t| t.reject.as_ref()) else { continue };
        let hold = purge_time(reject);
        let until = tokio::time::Instant::now() + hold;
        match gate.hold(until).await {
            Ok(()) => tracing::warn!(
                task = %task, output = %reject.output, seconds = hold.as_secs_f64(),
                "the last run did not stop in order: reject gate held on for one travel time, so no part judged before it (or never judged) passes"
            ),
            Err(e) => {
                tracing::error!(task = %task, output = %reject.output, error = %e, "the gate could not be held on for the purge after an unclean stop")
            }
        }
    }
}
