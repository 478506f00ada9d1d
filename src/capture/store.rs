//! The in-memory index of one task's records on disk, oldest first: built by one scan at start
//! (which also removes what a crash left half-written), then kept by the writer.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

/// One record: an image and its sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `<dir>/<task>/<date>/<part_id>-<VERDICT>-<time>`, without an extension.
    stem: PathBuf,
    ext: String,
    date: String,
    time: String,
    pub part_id: u64,
    pub verdict: String,
    /// Of the image and the sidecar together.
    pub bytes: u64,
}

impl Entry {
    pub fn new(
        stem: PathBuf,
        ext: &str,
        date: String,
        time: String,
        part_id: u64,
        verdict: String,
        bytes: u64,
    ) -> Entry {
        Entry { stem, ext: ext.to_string(), date, time, part_id, verdict, bytes }
    }

    pub fn image(&self) -> PathBuf {
        self.stem.with_extension(&self.ext)
    }

    pub fn sidecar(&self) -> PathBuf {
        self.stem.with_extension("json")
    }

    /// `<date>/<name>`: the record's place under its task's folder.
    pub fn place(&self) -> String {
        let name = self.stem.file_name().and_then(|n| n.to_str()).unwrap_or("");
        format!("{}/{name}", self.date)
    }

    /// Orders records by when they were captured (the part id breaks ties).
    pub fn sort_key(&self) -> String {
        format!("{}{}{:020}", self.date, self.time, self.part_id)
    }
}

/// One task's records, oldest first, and their total size.
#[derive(Debug, Default)]
pub struct Index {
    entries: VecDeque<Entry>,
    bytes: u64,
}

/// The records under a task's folder, oldest first; with `clean`, `.tmp` files and images
/// without a sidecar are deleted on the way.
fn list(dir: &Path, clean: bool) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for day in std::fs::read_dir(dir)? {
        let day = day?.path();
        let Some(date) = day.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if !day.is_dir() || date.len() != 10 {
            continue;
        }
        let mut sidecars = Vec::new();
        let mut images = Vec::new();
        for f in std::fs::read_dir(&day)? {
            let path = f?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("tmp") if clean => {
                    let _ = std::fs::remove_file(&path);
                }
                Some("json") => sidecars.push(path),
                Some(e) if IMAGE_EXTS.contains(&e) => images.push(path),
                _ => {}
            }
        }
        for image in images.iter().filter(|_| clean) {
            if !image.with_extension("json").exists() {
                let _ = std::fs::remove_file(image);
            }
        }
        for side in sidecars {
            let Some(image) = IMAGE_EXTS.iter().map(|e| side.with_extension(e)).find(|p| p.exists()) else {
                continue;
            };
            let stem = side.with_extension("");
            let name = stem.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
            let mut parts = name.splitn(3, '-');
            let (Some(id), Some(verdict), Some(time)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Ok(part_id) = id.parse() else { continue };
            // Gone meanwhile (deleted as the oldest by a running node): not a record any more.
            let (Ok(a), Ok(b)) = (std::fs::metadata(&side), std::fs::metadata(&image)) else { continue };
            let bytes = a.len() + b.len();
            let ext = image.extension().and_then(|e| e.to_str()).unwrap_or("png").to_string();
            entries.push(Entry {
                stem,
                ext,
                date: date.clone(),
                time: time.to_string(),
                part_id,
                verdict: verdict.to_string(),
                bytes,
            });
        }
    }
    entries.sort_by_key(Entry::sort_key);
    Ok(entries)
}

/// The image extensions a record may have.
const IMAGE_EXTS: [&str; 2] = ["png", "jpg"];

impl Index {
    /// Read `dir` (`<dir>/<date>/<files>`): every sidecar with its image is a record; `.tmp`
    /// files and images without a sidecar (a crash between the two renames) are deleted.
    pub fn scan(dir: &Path) -> io::Result<Index> {
        let entries = list(dir, true)?;
        let bytes = entries.iter().map(|e| e.bytes).sum();
        Ok(Index { entries: entries.into(), bytes })
    }

    /// The records under `dir` as (image, sidecar), oldest first, touching nothing: for reading a
    /// store a running node may be writing (its `.tmp` files are its own).
    pub fn scan_readonly(dir: &Path) -> io::Result<Vec<(PathBuf, PathBuf)>> {
        Ok(list(dir, false)?.into_iter().map(|e| (e.image(), e.sidecar())).collect())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn push(&mut self, e: Entry) {
        self.bytes += e.bytes;
        self.entries.push_back(e);
    }

    /// Delete the oldest records (files and entries) until at most `max_files` records and
    /// `max_bytes` remain; how many were deleted. The newest record is kept even when it alone
    /// is larger than `max_bytes`.
    pub fn trim(&mut self, max_files: u64, max_bytes: u64) -> u64 {
        let mut deleted = 0;
        while self.entries.len() as u64 > max_files || (self.bytes > max_bytes && self.entries.len() > 1) {
            let Some(e) = self.entries.pop_front() else { break };
            self.bytes -= e.bytes;
            // The sidecar first: an image without its sidecar is a leftover the next scan removes.
            let _ = std::fs::remove_file(e.sidecar());
            let _ = std::fs::remove_file(e.image());
            if let Some(day) = e.stem.parent() {
                // Only succeeds once the day's folder is empty.
                let _ = std::fs::remove_dir(day);
            }
            deleted += 1;
        }
        deleted
    }

    /// The newest record of `part_id`.
    pub fn newest_of(&self, part_id: u64) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.part_id == part_id)
    }

    /// Up to `n` records that pass `keep`, newest first.
    pub fn newest(&self, n: usize, keep: impl Fn(&Entry) -> bool) -> impl Iterator<Item = &Entry> {
        self.entries.iter().rev().filter(move |e| keep(e)).take(n)
    }

    /// The record at `place` (see [`Entry::place`]).
    pub fn at_place(&self, place: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.place() == place)
    }

    /// A record's sidecar was rewritten from `old` to `new` bytes.
    pub fn resize(&mut self, e: &Entry, new: u64, old: u64) {
        if let Some(found) = self.entries.iter_mut().rev().find(|x| x.stem == e.stem) {
            found.bytes = found.bytes + new - old.min(found.bytes);
            self.bytes = self.bytes + new - old.min(self.bytes);
        }
    }
}
