//! What the operator sees of judged parts: the latest judged frame per camera (the live view)
//! and the last NG, UNCERTAIN and ERROR parts with their images ("why was it rejected").
//!
//! The controller hands a judged part's frame here once its verdict is known, before the part
//! waits for its gate, so a part never holds its image while it travels. Handing over is a
//! move of the frame (no copy) and a short lock; drawing and JPEG encoding happen later, on the
//! viewer's request, off the inspection threads. The store keeps one latest shot per camera
//! (a new one replaces it, at most `live_fps` times a second) and a ring of the last `gallery`
//! parts that were not OK: memory is bounded by both, whatever the viewers do.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opencv::core::Mat;

use super::{Detection, HeatMap, Verdict};

/// One judged part with its frame, as the controller knew it.
pub struct Shot {
    /// A number that grows with every shot the store takes (the page asks for "newer than").
    pub seq: u64,
    pub task: Arc<str>,
    pub camera: Arc<str>,
    pub part_id: u64,
    pub captured: SystemTime,
    pub verdict: Verdict,
    /// `name@version` of the model that judged it.
    pub model: Arc<str>,
    /// The model's classes and their scores, in its output order.
    pub classes: Arc<[String]>,
    pub scores: Vec<f32>,
    pub ng_score: f32,
    /// The NG threshold the part was judged against.
    pub threshold: f32,
    pub detections: Vec<Detection>,
    /// Anomaly models: the map the score came from, drawn as a heat map.
    pub heat: Option<HeatMap>,
    /// Why the verdict is ERROR, when it is.
    pub error: Option<String>,
    /// The frame as the model saw it (rotated and cropped); None when the part had no frame
    /// (ERROR before inference).
    pub image: Option<Mat>,
    /// Full-frame pixels per pixel of `image` (1; 2, 4 or 8 when the camera decodes reduced):
    /// `detections` are in full-frame pixels.
    pub image_scale: u32,
}

/// Where judged parts' frames are kept beyond the page: evidence capture. The controller hands a
/// part over through this without knowing where it goes (decision does no I/O); `app`
/// implements it over the capture store.
pub trait Keeper: Send + Sync {
    /// Whether a part of this verdict is kept. For an OK part this is the sampling decision: it
    /// is asked once per OK part that has a frame, before the frame is kept.
    fn wants(&self, verdict: Verdict) -> bool;
    /// Take the part (never blocks; a shot without an image is not kept).
    fn keep(&self, shot: Shot);
}

/// Parts kept on disk by evidence capture, as the page's gallery shows them for the tasks that
/// capture; `app` implements it over the capture store (http never imports a store).
pub trait Stored: Send + Sync {
    /// The tasks whose gallery comes from the store.
    fn tasks(&self) -> Vec<String>;
    /// Changes whenever the newest kept part that is not OK does (the page reloads its gallery then).
    fn head(&self) -> Option<String>;
    /// The newest `n` kept parts that are not OK, newest first, without their images.
    fn newest(&self, n: usize) -> Vec<StoredShot>;
    /// One kept part with its image (read from disk), by its key.
    fn get(&self, key: &str) -> Option<StoredShot>;
}

/// A part kept on disk: its key in the store, the shot as judged, and its review mark (the
/// sidecar's `review`, null when unmarked).
pub struct StoredShot {
    pub key: String,
    pub shot: Shot,
    pub review: serde_json::Value,
}

/// Frames on their way from the inference workers to the controllers at most, node-wide: a
/// controller that falls behind must not make the workers pile up frames for the page.
pub const MAX_LENT: usize = 16;

/// A frame lent to the view on its way to the controller; counted until the controller takes
/// it ([`Lent::into_image`]) or drops it.
pub struct Lent {
    image: Mat,
    scale: u32,
    count: Arc<AtomicUsize>,
}

impl Lent {
    /// The frame, and the camera's full-frame pixels per pixel of it (see [`Shot::image_scale`]).
    pub fn into_image(mut self) -> (Mat, u32) {
        (std::mem::take(&mut self.image), self.scale)
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lent(frame)")
    }
}

/// The shots of one node. Cheap to share; one lock, held only to swap an `Arc`.
pub struct Views {
    inner: Mutex<Inner>,
    lent: Arc<AtomicUsize>,
    /// Least time between two live shots of one camera.
    live_every: Duration,
    gallery: usize,
    seq: AtomicU64,
    /// False when there is no page, only evidence capture: frames are lent, never shown.
    page: bool,
}

#[derive(Default)]
struct Inner {
    latest: BTreeMap<Arc<str>, (Instant, Arc<Shot>)>,
    kept: VecDeque<Arc<Shot>>,
}

impl Views {
    pub fn new(live_fps: f64, gallery: usize) -> Views {
        Views {
            inner: Mutex::new(Inner::default()),
            lent: Arc::new(AtomicUsize::new(0)),
            live_every: Duration::from_secs_f64(1.0 / live_fps.max(0.01)),
            gallery: gallery.max(1),
            seq: AtomicU64::new(0),
            page: true,
        }
    }

    /// Views that only lend frames (for evidence capture on a node without the page): nothing
    /// is shown or kept here.
    pub fn lend_only() -> Views {
        Views { page: false, ..Views::new(1.0, 1) }
    }

    /// Lend an inferred frame to its part's controller, unless [`MAX_LENT`] are on their way
    /// already (then the part shows without its image).
    pub fn lend(&self, image: Mat, scale: u32) -> Option<Lent> {
        if self.lent.fetch_add(1, Ordering::Relaxed) >= MAX_LENT {
            self.lent.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Lent { image, scale, count: self.lent.clone() })
    }

    /// Whether a part judged `verdict` on `camera` now would be taken: every part that is not
    /// OK, and an OK part when its camera's live shot is due. Lets the controller skip building
    /// a shot nobody will see.
    pub fn wants(&self, camera: &str, verdict: Verdict) -> bool {
        self.page && (verdict != Verdict::Ok || self.live_due(camera, Instant::now()))
    }

    fn live_due(&self, camera: &str, now: Instant) -> bool {
        let inner = self.lock();
        inner.latest.get(camera).map_or(true, |(at, _)| now.saturating_duration_since(*at) >= self.live_every)
    }

    /// Take a judged part (the controller calls this after [`Views::wants`]).
    pub fn offer(&self, mut shot: Shot) {
        let now = Instant::now();
        shot.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let keep = shot.verdict != Verdict::Ok;
        let shot = Arc::new(shot);
        let mut inner = self.lock();
        let due = inner
            .latest
            .get(&shot.camera)
            .map_or(true, |(at, _)| now.saturating_duration_since(*at) >= self.live_every);
        // A rejected part always shows: the live view must not hide the NG the operator is
        // looking for behind the rate limit.
        if due || keep {
            inner.latest.insert(shot.camera.clone(), (now, shot.clone()));
        }
        if keep {
            if inner.kept.len() == self.gallery {
                inner.kept.pop_front();
            }
            inner.kept.push_back(shot);
        }
    }

    /// The latest judged shot of `camera`.
    pub fn latest(&self, camera: &str) -> Option<Arc<Shot>> {
        self.lock().latest.get(camera).map(|(_, s)| s.clone())
    }

    /// Every camera's latest shot.
    pub fn all_latest(&self) -> Vec<Arc<Shot>> {
        self.lock().latest.values().map(|(_, s)| s.clone()).collect()
    }

    /// The kept (not OK) shots, newest first.
    pub fn gallery(&self) -> Vec<Arc<Shot>> {
        self.lock().kept.iter().rev().cloned().collect()
    }

    /// How many not-OK parts the gallery shows.
    pub fn gallery_size(&self) -> usize {
        self.gallery
    }

    /// A kept shot by its `seq`.
    pub fn kept(&self, seq: u64) -> Option<Arc<Shot>> {
        self.lock().kept.iter().find(|s| s.seq == seq).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shot(camera: &str, part_id: u64, verdict: Verdict) -> Shot {
        Shot {
            seq: 0,
            task: "t".into(),
            camera: camera.into(),
            part_id,
            captured: SystemTime::now(),
            verdict,
            model: "m@1".into(),
            classes: vec!["good".to_string(), "scratch".to_string()].into(),
            scores: vec![0.2, 0.8],
            ng_score: 0.8,
            threshold: 0.5,
            detections: vec![],
            heat: None,
            error: None,
            image: None,
            image_scale: 1,
        }
    }

    #[test]
    fn ok_parts_show_at_the_live_rate_and_rejected_parts_always() {
        let v = Views::new(1.0, 3);
        assert!(v.wants("top", Verdict::Ok), "nothing shown yet");
        v.offer(shot("top", 1, Verdict::Ok));
        assert!(!v.wants("top", Verdict::Ok), "the next OK part is not due for a second");
        assert!(v.wants("top", Verdict::Ng) && v.wants("side", Verdict::Ok));
        v.offer(shot("top", 2, Verdict::Ok));
        assert_eq!(v.latest("top").unwrap().part_id, 1, "an OK part offered early does not replace");
        v.offer(shot("top", 3, Verdict::Ng));
        assert_eq!(v.latest("top").unwrap().part_id, 3, "an NG part always shows");
    }

    #[test]
    fn lend_only_views_show_nothing() {
        let v = Views::lend_only();
        assert!(!v.wants("top", Verdict::Ng) && !v.wants("top", Verdict::Ok));
        assert!(v.lend(Mat::default(), 1).is_some(), "frames are still lent, for capture");
    }

    #[test]
    fn frames_on_their_way_are_bounded() {
        let v = Views::new(1.0, 3);
        let lent: Vec<Lent> = (0..MAX_LENT).map(|_| v.lend(Mat::default(), 1).expect("room")).collect();
        assert!(v.lend(Mat::default(), 1).is_none(), "the bound holds");
        let mut lent = lent.into_iter();
        let _image = lent.next().unwrap().into_image();
        assert!(v.lend(Mat::default(), 1).is_some(), "a frame taken frees its place");
    }

    #[test]
    fn the_gallery_keeps_the_last_parts_that_were_not_ok() {
        let v = Views::new(100.0, 3);
        for (i, verdict) in
            [Verdict::Ng, Verdict::Ok, Verdict::Error, Verdict::Uncertain, Verdict::Ng].iter().enumerate()
        {
            v.offer(shot("top", i as u64, *verdict));
        }
        let ids: Vec<u64> = v.gallery().iter().map(|s| s.part_id).collect();
        assert_eq!(ids, vec![4, 3, 2], "newest first, bounded, OK parts not kept");
        let seq = v.gallery()[1].seq;
        assert_eq!(v.kept(seq).unwrap().part_id, 3);
        assert!(v.kept(1).is_none(), "the oldest was dropped");
    }
}
