//! The birth/death sequence number, kept across restarts.
//!
//! Every CONNECT carries a new bdSeq in its Will (NDEATH), and the NBIRTH
//! that follows repeats it, so a host can tell a stale death from the
//! current one. The file holds the number the *next* connect will use; it
//! is written (and synced) before the connect goes out, so a power cut can
//! skip a number but never reuse one. The file is 0600 and a folder made for it 0700.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::util::private_fs;

#[derive(Debug)]
pub struct BdSeq {
    path: PathBuf,
    next: u8,
}

impl BdSeq {
    /// Read the file; a missing file starts at 0, an unreadable one too (logged).
    pub fn open(path: &Path) -> BdSeq {
        let next = match std::fs::read_to_string(path) {
            Ok(s) => match s.trim().parse::<u8>() {
                Ok(n) => n,
                Err(_) => {
                    tracing::warn!(file = %path.display(), content = %s.trim(), "Sparkplug bdSeq file is not a number 0-255; starting at 0");
                    0
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "Sparkplug bdSeq file unreadable; starting at 0");
                0
            }
        };
        BdSeq { path: path.to_path_buf(), next }
    }

    /// The bdSeq for a new CONNECT; the file moves on to the one after (255 wraps to 0).
    pub fn take(&mut self) -> u8 {
        let this = self.next;
        self.next = this.wrapping_add(1);
        if let Err(e) = self.save() {
            tracing::error!(file = %self.path.display(), error = %e, "Sparkplug bdSeq cannot be saved; a restart may repeat a bdSeq (check the StateDirectory)");
        }
        this
    }

    fn save(&self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = private_fs::create(&tmp)?;
        writeln!(f, "{}", self.next)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_across_restarts_and_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/bdseq");
        let mut b = BdSeq::open(&path);
        assert_eq!(b.take(), 0);
        assert_eq!(b.take(), 1);
        let mut again = BdSeq::open(&path);
        assert_eq!(again.take(), 2, "a restart continues, never repeats");
        std::fs::write(&path, "255\n").unwrap();
        let mut w = BdSeq::open(&path);
        assert_eq!((w.take(), w.take()), (255, 0));
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(BdSeq::open(&path).take(), 0);
    }

    #[test]
    fn the_file_and_its_new_folder_are_for_the_services_user_alone() {
        // Umask-independent: 0700 for a folder made here, 0600 for the file, also when an older
        // file was readable by others.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/bdseq");
        BdSeq::open(&path).take();
        assert_eq!((mode(&dir.path().join("state")), mode(&path)), (0o700, 0o600));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        BdSeq::open(&path).take();
        assert_eq!(mode(&path), 0o600);
    }
}
