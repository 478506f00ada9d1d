//! What every remote command passes before it is executed, whichever door
//! (JSON or Sparkplug) it came through: it is not stale, it is not a replay,
//! and the node is not being flooded.
//!
//! - **Time**: a command that carries a timestamp (JSON `ts`, the Sparkplug
//!   payload timestamp) more than [`MAX_SKEW`] old, or ahead of this node's
//!   clock by more than that, is refused.
//! - **Replay**: every admitted command's id is remembered: the last
//!   [`REMEMBER_IDS`] or [`REMEMBER_FOR`], whichever is fewer, in the file
//!   [`ID_FILE`] of `runtime.state_dir`, so that a restart does not forget
//!   them. A JSON command's id is its `id`; a Sparkplug command has none, so
//!   its id is a digest of its topic and payload (a host stamps every
//!   command with a new timestamp, so two commands are never identical).
//!   The file is rewritten whole for each admitted command (temp file,
//!   fsync, rename), mode 0600.
//! - **Rate**: at most [`RATE_COUNT`] commands in [`RATE_WINDOW`], node-wide
//!   (both doors together); the excess is refused, not queued, and does not
//!   count.
//!
//! An id is used up when its command is admitted, whether or not the command
//! then succeeds; a command refused here uses up nothing. When the id file
//! cannot be read at start, or written, commands are refused (fail closed):
//! a replay could not be told apart after the next restart.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How far a command's timestamp may be from this node's clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(60);
/// Commands admitted per [`RATE_WINDOW`], node-wide.
pub const RATE_COUNT: usize = 10;
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// How many ids are remembered, at most.
pub const REMEMBER_IDS: usize = 10_000;
/// How long an id is remembered, at most.
pub const REMEMBER_FOR: Duration = Duration::from_secs(24 * 3600);
/// The longest `id` a JSON command may have.
pub const MAX_ID_CHARS: usize = 128;
/// The id file, in `runtime.state_dir`.
pub const ID_FILE: &str = "command-ids";

/// Who a command says it is, for the replay check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandId {
    /// A JSON command's `id` (a number and the same digits as a string are one id).
    Json(String),
    /// A Sparkplug command: the hex digest of its topic and payload.
    Sparkplug(String),
}

impl CommandId {
    /// A JSON id: the string, or the number's digits.
    pub fn json(id: &serde_json::Value) -> CommandId {
        CommandId::Json(match id {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// A Sparkplug command's id: a digest of its topic and payload bytes.
    pub fn sparkplug(topic: &str, payload: &[u8]) -> CommandId {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(topic.as_bytes());
        h.update([0]);
        h.update(payload);
        let hex: String = h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
        CommandId::Sparkplug(hex)
    }

    /// How it is stored: the door, then the id.
    fn key(&self) -> String {
        match self {
            CommandId::Json(id) => format!("json:{id}"),
            CommandId::Sparkplug(d) => format!("sparkplug:{d}"),
        }
    }

    /// The name of the command's timestamp, in refusals.
    fn clock(&self) -> &'static str {
        match self {
            CommandId::Json(_) => "`ts`",
            CommandId::Sparkplug(_) => "payload timestamp",
        }
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandId::Json(id) => write!(f, "{id}"),
            CommandId::Sparkplug(d) => write!(f, "sparkplug:{d}"),
        }
    }
}

/// Where a command came from and what it says about itself.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The topic it came on.
    pub source: String,
    pub id: CommandId,
    /// When the sender says it sent it (ms since 1970), if it says.
    pub sent_ms: Option<i64>,
}

/// The checks, shared by both doors.
pub struct Guard {
    inner: Mutex<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Remembered ids with when they were admitted (wall clock, ms since 1970), oldest first.
    ids: VecDeque<(i64, String)>,
    known: HashSet<String>,
    /// When the commands in the rate window were admitted.
    recent: VecDeque<Instant>,
    /// Why nothing can be admitted (the id file could not be read at start).
    broken: Option<String>,
}

fn secs(ms: i64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

impl Guard {
    /// The guard of a node whose state lives in `state_dir`: reads the ids remembered there.
    pub fn open(state_dir: &Path) -> Guard {
        Guard::open_at(state_dir, crate::util::time::now_ms())
    }

    fn open_at(state_dir: &Path, now_ms: i64) -> Guard {
        let path = state_dir.join(ID_FILE);
        let mut inner =
            Inner { path, ids: VecDeque::new(), known: HashSet::new(), recent: VecDeque::new(), broken: None };
        match std::fs::read_to_string(&inner.path) {
            Ok(text) => {
                let mut unreadable = 0;
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let entry = line.split_once(' ').and_then(|(ms, key)| {
                        Some((ms.parse::<i64>().ok()?, serde_json::from_str::<String>(key).ok()?))
                    });
                    match entry {
                        Some((ms, key)) => inner.remember(ms, key),
                        None => unreadable += 1,
                    }
                }
                inner.forget_old(now_ms);
                if unreadable > 0 {
                    tracing::warn!(target: "linesight::audit", file = %inner.path.display(), unreadable, "lines of the command id file could not be read; skipped");
                }
                tracing::info!(file = %inner.path.display(), ids = inner.ids.len(), "command ids of the last 24 h read");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let why = format!(
                    "command refused: the ids of earlier commands cannot be read from {} ({e}), so a replay could not be told apart; make it readable for linesight and restart",
                    inner.path.display()
                );
                tracing::error!(target: "linesight::audit", error = %why, "every remote command will be refused");
                inner.broken = Some(why);
            }
        }
        Guard { inner: Mutex::new(inner) }
    }

    /// Admit `count` commands of one message from `origin` (a Sparkplug payload may carry
    /// several), or say why not. `now_ms` is the wall clock, `now` the monotonic one.
    pub fn admit(&self, origin: &Origin, count: usize, now_ms: i64, now: Instant) -> Result<(), String> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &inner.broken {
            return Err(why.clone());
        }
        let skew = MAX_SKEW.as_millis() as i64;
        if let Some(sent) = origin.sent_ms {
            let age = now_ms.saturating_sub(sent);
            if age > skew {
                return Err(format!(
                    "command refused: its {} is {} s old; commands older than {} s are refused (replay protection); send it again with the current time, and check the sender's clock",
                    origin.id.clock(),
                    secs(age),
                    MAX_SKEW.as_secs()
                ));
            }
            if age < -skew {
                return Err(format!(
                    "command refused: its {} is {} s in the future; commands more than {} s ahead are refused (replay protection); check the clocks of the sender and of this node",
                    origin.id.clock(),
                    secs(-age),
                    MAX_SKEW.as_secs()
                ));
            }
        }
        let key = origin.id.key();
        if inner.known.contains(&key) {
            return Err(match &origin.id {
                CommandId::Json(id) => format!(
                    "command refused: id `{id}` was already used (a replay); ids are remembered for {} h (the last {REMEMBER_IDS}), across restarts; send every command with a new id",
                    REMEMBER_FOR.as_secs() / 3600
                ),
                CommandId::Sparkplug(_) => format!(
                    "command refused: this exact payload was already received on {} (a replay); send every command with a new payload timestamp",
                    origin.source
                ),
            });
        }
        while inner.recent.front().is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW) {
            inner.recent.pop_front();
        }
        if inner.recent.len() + count > RATE_COUNT {
            let wait = inner
                .recent
                .get(inner.recent.len() + count - RATE_COUNT - 1)
                .map_or(RATE_WINDOW, |t| RATE_WINDOW.saturating_sub(now.duration_since(*t)));
            return Err(format!(
                "command refused: more than {RATE_COUNT} commands in {} s (node-wide, both doors together); wait {:.1} s and send it again",
                RATE_WINDOW.as_secs(),
                wait.as_secs_f64()
            ));
        }
        inner.remember(now_ms, key.clone());
        inner.forget_old(now_ms);
        if let Err(e) = inner.persist() {
            inner.known.remove(&key);
            inner.ids.retain(|(_, k)| *k != key);
            return Err(format!(
                "command refused: its id cannot be recorded in {} ({e}), so a replay could not be refused after a restart; make `runtime.state_dir` writable for linesight",
                inner.path.display()
            ));
        }
        inner.recent.extend(std::iter::repeat(now).take(count));
        Ok(())
    }

    /// How many ids are remembered now.
    pub fn remembered(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).ids.len()
    }
}

impl Inner {
    fn remember(&mut self, ms: i64, key: String) {
        if self.known.insert(key.clone()) {
            self.ids.push_back((ms, key));
        }
    }

    /// Keep the ids of the last 24 h, at most the newest 10,000.
    fn forget_old(&mut self, now_ms: i64) {
        let oldest = now_ms - REMEMBER_FOR.as_millis() as i64;
        while let Some((ms, _)) = self.ids.front() {
            if *ms >= oldest && self.ids.len() <= REMEMBER_IDS {
                break;
            }
            if let Some((_, key)) = self.ids.pop_front() {
                self.known.remove(&key);
            }
        }
    }

    /// Write every remembered id: a temp file beside the id file, fsync, rename, fsync the folder.
    fn persist(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("tmp");
        let mut text = String::with_capacity(self.ids.len() * 48);
        for (ms, key) in &self.ids {
            text += &format!("{ms} {}\n", serde_json::Value::String(key.clone()));
        }
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const NOW: i64 = 1_795_840_496_789;

    fn json(id: &str, sent_ms: Option<i64>) -> Origin {
        Origin { source: "t/commands".into(), id: CommandId::Json(id.into()), sent_ms }
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeated_id_is_refused_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let g = Guard::open_at(dir.path(), NOW);
        let t = Instant::now();
        g.admit(&json("a", None), 1, NOW, t).unwrap();
        let e = g.admit(&json("a", None), 1, NOW, t).unwrap_err();
        assert_eq!(
            e,
            "command refused: id `a` was already used (a replay); ids are remembered for 24 h (the last 10000), \
             across restarts; send every command with a new id"
        );
        // A number and its digits as a string are one id.
        g.admit(&json("7", None), 1, NOW, t).unwrap();
        assert!(g.admit(&Origin { id: CommandId::json(&serde_json::json!(7)), ..json("", None) }, 1, NOW, t).is_err());
        let file = dir.path().join(ID_FILE);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!dir.path().join("command-ids.tmp").exists(), "the temp file is renamed over the id file");
        drop(g);

        let again = Guard::open_at(dir.path(), NOW + 1000);
        assert_eq!(again.remembered(), 2);
        assert!(again.admit(&json("a", None), 1, NOW + 1000, t).unwrap_err().contains("already used"));
        assert!(again.admit(&json("7", None), 1, NOW + 1000, t).is_err());
        again.admit(&json("b", None), 1, NOW + 1000, t).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn ids_are_remembered_for_a_day_and_at_most_ten_thousand() {
        let dir = tempfile::tempdir().unwrap();
        let g = Guard::open_at(dir.path(), NOW);
        let day = REMEMBER_FOR.as_millis() as i64;
        g.admit(&json("old", None), 1, NOW, Instant::now()).unwrap();
        let later = NOW + day + 1;
        tokio::time::advance(RATE_WINDOW).await;
        g.admit(&json("new", None), 1, later, Instant::now()).unwrap();
        assert_eq!(g.remembered(), 1, "a day later the first id is forgotten");
        g.admit(&json("old", None), 1, later, Instant::now()).unwrap();

        // The cap: ids admitted long ago (written into the file), then read back.
        let text: String = (0..REMEMBER_IDS as i64 + 5).map(|i| format!("{} \"json:{i}\"\n", NOW + i)).collect();
        std::fs::write(dir.path().join(ID_FILE), text).unwrap();
        let g = Guard::open_at(dir.path(), NOW + 20_000);
        assert_eq!(g.remembered(), REMEMBER_IDS);
        let t = Instant::now();
        assert!(g.admit(&json("5", None), 1, NOW + 20_000, t).is_err());
        assert!(g.admit(&json("4", None), 1, NOW + 20_000, t).is_ok(), "the oldest five are forgotten");
        assert_eq!(g.remembered(), REMEMBER_IDS);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_and_future_timestamps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let g = Guard::open_at(dir.path(), NOW);
        let t = Instant::now();
        let e = g.admit(&json("s", Some(NOW - 60_001)), 1, NOW, t).unwrap_err();
        assert_eq!(
            e,
            "command refused: its `ts` is 60.0 s old; commands older than 60 s are refused (replay protection); \
             send it again with the current time, and check the sender's clock"
        );
        let e = g.admit(&json("f", Some(NOW + 75_000)), 1, NOW, t).unwrap_err();
        assert!(e.contains("its `ts` is 75.0 s in the future"), "{e}");
        let sp = Origin { source: "spBv1.0/g/NCMD/n".into(), id: CommandId::sparkplug("x", b"y"), sent_ms: Some(0) };
        assert!(g.admit(&sp, 1, NOW, t).unwrap_err().contains("its payload timestamp is"));
        // A refused command uses up nothing: the same id with a good timestamp is admitted.
        g.admit(&json("s", Some(NOW - 60_000)), 1, NOW, t).unwrap();
        g.admit(&json("f", Some(NOW + 59_000)), 1, NOW, t).unwrap();
        assert_eq!(g.remembered(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_ten_commands_in_ten_seconds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let g = Guard::open_at(dir.path(), NOW);
        for i in 0..RATE_COUNT {
            g.admit(&json(&format!("r{i}"), None), 1, NOW, Instant::now()).unwrap();
            tokio::time::advance(Duration::from_millis(500)).await;
        }
        // 5 s after the first: the eleventh waits until the first leaves the window.
        let e = g.admit(&json("r10", None), 1, NOW, Instant::now()).unwrap_err();
        assert_eq!(
            e,
            "command refused: more than 10 commands in 10 s (node-wide, both doors together); wait 5.0 s and send it again"
        );
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert!(g.admit(&json("r10", None), 1, NOW, Instant::now()).is_err(), "refusals do not count, nor admit");
        tokio::time::advance(Duration::from_millis(1)).await;
        g.admit(&json("r10", None), 1, NOW, Instant::now()).unwrap();
        // A Sparkplug payload with two commands needs room for two.
        tokio::time::advance(Duration::from_millis(500)).await;
        let two = Origin { source: "s".into(), id: CommandId::sparkplug("s", b"two"), sent_ms: None };
        assert!(g.admit(&two, 2, NOW, Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(500)).await;
        g.admit(&two, 2, NOW, Instant::now()).unwrap();
        assert!(g.admit(&two, 2, NOW, Instant::now()).unwrap_err().contains("this exact payload was already received"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_id_file_that_cannot_be_written_or_read_refuses_commands() {
        let dir = tempfile::tempdir().unwrap();
        // The state folder does not exist at start; then a file takes its place, so nothing can be written.
        let blocked = dir.path().join("state");
        let g = Guard::open_at(&blocked, NOW);
        std::fs::write(&blocked, "").unwrap();
        let e = g.admit(&json("a", None), 1, NOW, Instant::now()).unwrap_err();
        assert!(e.contains("cannot be recorded") && e.contains("runtime.state_dir"), "{e}");
        assert_eq!(g.remembered(), 0, "an id that could not be recorded is not used up");
        // The id file is a folder: it cannot be read, and every command is refused.
        std::fs::create_dir(dir.path().join(ID_FILE)).unwrap();
        let g = Guard::open_at(dir.path(), NOW);
        let e = g.admit(&json("a", None), 1, NOW, Instant::now()).unwrap_err();
        assert!(e.contains("cannot be read from"), "{e}");
    }

    #[test]
    fn sparkplug_ids_are_digests_of_topic_and_payload() {
        let a = CommandId::sparkplug("spBv1.0/g/DCMD/n/t", b"\x08\x01");
        assert_eq!(a, CommandId::sparkplug("spBv1.0/g/DCMD/n/t", b"\x08\x01"));
        assert_ne!(a, CommandId::sparkplug("spBv1.0/g/DCMD/n/u", b"\x08\x01"));
        assert_ne!(a, CommandId::sparkplug("spBv1.0/g/DCMD/n/t", b"\x08\x02"));
        assert_eq!(a.to_string().len(), "sparkplug:".len() + 32);
    }
}
