//! Cameras: a capture thread per camera feeding a bounded queue.
//!
//! Capture runs on its own OS thread because OpenCV blocks. The thread owns
//! its source; it reconnects live sources with backoff, paces files that
//! stand in for a line, and decides per frame what a full queue means
//! (see [`crate::part::queue::WhenFull`]). Each part-per-frame frame is announced to the
//! task's controller, so a frame that is lost later still gets a verdict.

pub mod source;
pub mod transform;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::part::announce::Announcer;
use crate::part::fit::Fit;
use opencv::core::Mat;

use crate::config::{CameraConfig, CameraMode, SourceConfig};
use crate::part::queue::{FrameQueue, Pushed, WhenFull};
use crate::part::{Frame, PartEvent, PartInfo};
use crate::stats::{CameraStats, CameraStatus};
use crate::util::backoff::Backoff;
use crate::util::throttle::{Report, Throttle};
use source::{FrameSource, Grabbed};

/// A cheap fingerprint of a frame: a hash of every 61st byte (a frozen
/// stream repeats frames exactly; a live sensor never does, its noise alone
/// changes them).
fn fingerprint(image: &Mat) -> Option<u64> {
    use opencv::prelude::MatTraitConstManual;
    let bytes = image.data_bytes().ok()?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes.iter().step_by(61) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    Some(h ^ bytes.len() as u64)
}

/// Opens sources; a closure so the demo and tests can hand the camera thread another source.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, source::SourceError> + Send>;

pub struct Camera {
    pub name: Arc<str>,
    pub config: CameraConfig,
    pub queue: Arc<FrameQueue<Frame>>,
    pub stats: Arc<CameraStats>,
    /// The task's controller (waits when it is full: a part is never announced twice or lost).
    pub events: Announcer,
    pub stop: Arc<AtomicBool>,
    pub opener: Opener,
    /// Triggered mode: parts waiting for their frame (filled by the task's trigger).
    pub waiting: Option<crate::part::Waiting>,
    /// Triggered mode: a part waiting longer than this already got ERROR; its frame is not taken.
    pub max_age: Duration,
    /// The task's settings: each part frame is stamped with them when it is captured.
    pub control: Arc<crate::part::control::TaskControl>,
    /// A reload's new settings for this camera (`app/reload.rs`), taken between two frames.
    pub reconfigure: std::sync::mpsc::Receiver<Settings>,
    /// What the task's model does with a frame: how far `decode: auto` may reduce (None: decode
    /// in full, for a model that is unusable or whose scores depend on the full decode).
    pub fit: Option<Fit>,
}

/// A camera's settings as a reload sends them: its config and its task's model's fit.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: CameraConfig,
    pub fit: Option<Fit>,
    /// The config changed: the source is opened again with it. Without, only the model's fit
    /// changed, and the camera takes it between two frames without a gap: a model swap must not
    /// cost a live camera its connection.
    pub reopen: bool,
}

impl Camera {
    /// An opener for the configured source.
    pub fn opener_for(source: &SourceConfig, timeout: Duration) -> Opener {
        let source = source.clone();
        Box::new(move || source::open(&source, timeout))
    }

    /// Start the capture thread. It ends on `stop`, or when a file that does
    /// not loop has been read, and closes the queue behind it either way.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name(format!("cam-{}", self.name)).spawn(move || self.run())
    }

    fn run(mut self) {
        let mut capture = self.start_capture();
        while !self.stop.load(Ordering::Relaxed) {
            // A camera that cannot open takes a reload too (a corrected device path).
            if let Some(new) = self.new_config() {
                if new.reopen {
                    self.reconfigure_to(new, &mut capture);
                } else {
                    (self.fit, capture.fit) = (new.fit, new.fit);
                }
            }
            let Some(src) = self.open(&mut capture.backoff, &mut capture.open_log) else { continue };
            match self.stream(src, &mut capture) {
                Streamed::Finished => break,
                Streamed::Reopen => {}
                Streamed::Reconfigure(new) => self.reconfigure_to(new, &mut capture),
            }
        }
        self.queue.close();
    }

    /// The latest settings a reload sent, if any arrived since the last look; a reopen asked
    /// for by an earlier one is kept.
    fn new_config(&self) -> Option<Settings> {
        let mut latest: Option<Settings> = None;
        while let Ok(mut c) = self.reconfigure.try_recv() {
            c.reopen |= latest.as_ref().is_some_and(|l| l.reopen);
            latest = Some(c);
        }
        latest
    }

    /// Take a reload's settings between two frames; the caller reopens the source. Frames
    /// already queued are inspected as they are (stamped with the settings of their capture);
    /// part ids go on from where they were, so no part id is given twice or skipped. A part
    /// that waits for its frame (triggered) gets the first frame of the new source after its
    /// trigger, or ERROR (rejected) if reopening takes longer than its inference timeout.
    fn reconfigure_to(&mut self, Settings { config: new, fit, .. }: Settings, capture: &mut Capture) {
        if new.source != self.config.source || new.timeout != self.config.timeout {
            self.opener = Camera::opener_for(&new.source, new.timeout.get());
        }
        self.config = new;
        self.fit = fit;
        let fresh = self.start_capture();
        // What carries over: the part ids, and the outage log of a camera that stays away.
        let (seq, open_log) = (capture.seq, std::mem::take(&mut capture.open_log));
        *capture = Capture { seq, open_log, ..fresh };
        if self.config.fps.is_none() {
            // The old rate's stall limit no longer holds; a live stream learns its own again.
            self.stats.set_stall_after_ms(0);
        }
        self.stats.set_frozen(false);
        self.stats.reconfigured.fetch_add(1, Ordering::Relaxed);
        tracing::info!(camera = %self.name, "camera settings changed by a reload; its source is opened again");
    }

    /// The capture loop's state before the first frame. With a configured
    /// rate the stall limit is known now; live streams without one learn it
    /// (see [`Camera::learn_interval`]).
    fn start_capture(&self) -> Capture {
        let interval = self.config.fps.map(|f| Duration::from_secs_f64(1.0 / f));
        let stall_frames = u64::from(self.config.stall_frames.max(1));
        if let Some(iv) = interval {
            self.stats.set_stall_after_ms(iv.as_millis() as u64 * stall_frames);
        }
        Capture {
            // Reopening a live source: 200 ms doubling to 10 s, ±25 % jitter.
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
            open_log: Throttle::default(),
            seq: 0,
            interval,
            stall_frames,
            transform: transform::Transform::of(&self.config),
            scale: 1,
            fit: self.fit,
            when_full: self.when_full(),
            last_print: None,
            same_in_a_row: 0,
            learned: None,
        }
    }

    /// What a full queue means for this camera's frames.
    fn when_full(&self) -> WhenFull {
        match (self.config.mode, self.config.fps, &self.config.source) {
            (CameraMode::FreeRunning, _, _) => WhenFull::DropOldest,
            // A file read as fast as inspection goes: nothing moves, so wait.
            (CameraMode::PartPerFrame, None, SourceConfig::File(_) | SourceConfig::Directory(_)) => WhenFull::Wait,
            // A real (or simulated) line: the part does not wait for us.
            (CameraMode::PartPerFrame | CameraMode::Triggered, _, _) => WhenFull::Refuse,
        }
    }

    /// Open the source. When it cannot be opened: offline, and the backoff
    /// waited out here (stop honoured) before the caller tries again.
    fn open(&mut self, backoff: &mut Backoff, log: &mut Throttle) -> Option<Box<dyn FrameSource>> {
        if self.stats.status() != CameraStatus::Online {
            self.stats.set_status(CameraStatus::Connecting);
        }
        match (self.opener)() {
            Ok(src) => {
                if self.stats.status() != CameraStatus::Online {
                    match log.recovered(Instant::now()) {
                        Some((away, attempts)) => {
                            tracing::info!(camera = %self.name, away_s = away.as_secs(), attempts, "camera online again")
                        }
                        None => tracing::info!(camera = %self.name, "camera online"),
                    }
                }
                self.stats.set_status(CameraStatus::Online);
                Some(src)
            }
            Err(e) => {
                self.stats.set_status(CameraStatus::Offline);
                let wait = backoff.delay();
                match log.failed(Instant::now(), &e.to_string()) {
                    Some(Report::First) => {
                        tracing::error!(camera = %self.name, error = %e, retry_in_ms = wait.as_millis() as u64, "camera cannot open; retrying")
                    }
                    Some(Report::Still { repeats, total, for_s }) => {
                        tracing::error!(camera = %self.name, error = %e, repeats, total, for_s, "camera still cannot open (logged once a minute)")
                    }
                    None => {}
                }
                self.sleep(wait);
                None
            }
        }
    }

    /// Read an open source, paced to the configured rate, until a stop, its
    /// end (a looped file starts over: reopened), or an error (the backoff
    /// is waited out here, then reopened). The source is closed on return.
    fn stream(&self, mut src: Box<dyn FrameSource>, capture: &mut Capture) -> Streamed {
        self.set_reduction(&mut *src, capture);
        let mut next_due = Instant::now();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Streamed::Finished;
            }
            if let Some(new) = self.new_config() {
                if new.reopen {
                    return Streamed::Reconfigure(new);
                }
                capture.fit = new.fit;
                self.set_reduction(&mut *src, capture);
            }
            if let Some(iv) = capture.interval {
                pace(&mut next_due, iv);
            }
            if capture.when_full == WhenFull::Wait {
                // Nothing moves while a file waits for inspection: its next frame is read when
                // it can enter the queue, so the part's clock starts then (with a single producer,
                // the push after it does not wait).
                self.queue.wait_for_room();
            }
            let grab_started = Instant::now();
            match self.grab(&mut *src, &capture.transform) {
                Ok(Some(frame)) => self.on_frame(capture, grab_started, frame),
                Ok(None) if self.config.looping => {
                    // A looped file starts over with the frame it started with: not a repeat.
                    capture.last_print = None;
                    return Streamed::Reopen;
                }
                Ok(None) => {
                    self.stats.set_status(CameraStatus::Ended);
                    tracing::info!(camera = %self.name, frames = capture.seq, "source ended");
                    return Streamed::Finished;
                }
                Err(e) => {
                    self.stats.set_status(CameraStatus::Offline);
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(camera = %self.name, error = %e, "camera lost; reconnecting");
                    self.sleep(capture.backoff.delay());
                    return Streamed::Reopen;
                }
            }
        }
    }

    /// Set the source's decode reduction for the frames from now on, and the crop to match.
    fn set_reduction(&self, src: &mut dyn FrameSource, capture: &mut Capture) {
        let k = self.decode_reduction(src, capture.fit);
        capture.scale = k;
        capture.transform = transform::Transform::of(&self.config).reduced(k);
    }

    /// How far this source's frames are reduced in decoding (`decode`): forced by the config, or
    /// with `auto` the largest reduction that still covers what the model resizes the frame to
    /// (rotation and crop counted). Reported in the camera's stats and, when it changes, in the
    /// log.
    fn decode_reduction(&self, src: &mut dyn FrameSource, fit: Option<Fit>) -> u32 {
        let wanted = match (self.config.decode.forced(), &fit, src.frame_size()) {
            (Some(k), _, _) => k,
            (None, Some(fit), Some((w, h))) => {
                let (w, h) = transform::Transform::of(&self.config).size_of(w, h);
                fit.largest_reduction(w, h)
            }
            (None, _, _) => 1,
        };
        let k = src.reduce(wanted);
        let before = self.stats.decode_scale.swap(u64::from(k), Ordering::Relaxed);
        if before != u64::from(k) {
            let size = src.frame_size().map(|(w, h)| format!("{w}x{h}")).unwrap_or_else(|| "unknown".into());
            if k == 1 && wanted == 1 {
                tracing::info!(camera = %self.name, frame = %size, "camera decodes its frames at full size");
            } else if k == wanted {
                tracing::info!(camera = %self.name, frame = %size, decode = %format!("1/{k}"), "camera decodes its frames at 1/{k} per side");
            } else {
                tracing::info!(camera = %self.name, frame = %size, wanted = %format!("1/{wanted}"), "camera decodes its frames at full size (its frames do not arrive as JPEG: MJPG through FFmpeg, a V4L2 camera with `fourcc: MJPG`, or a GStreamer pipeline ending in `image/jpeg ! appsink`)");
            }
        }
        k
    }

    /// The next frame, rotated and cropped as configured; `None` at the end of a file.
    fn grab(
        &self,
        src: &mut dyn FrameSource,
        transform: &transform::Transform,
    ) -> Result<Option<Grabbed>, source::SourceError> {
        src.next_frame().and_then(|f| match f {
            Some(Grabbed { image, arrived }) if !transform.is_identity() => transform
                .apply(image)
                .map(|image| Some(Grabbed { image, arrived }))
                .map_err(|why| source::SourceError::Read { what: format!("camera `{}`", self.name), why }),
            other => Ok(other),
        })
    }

    /// A frame arrived (the source works: the backoff starts over). The same
    /// frame as the last is counted, and `stall_frames` of them in a row are
    /// a frozen stream, but never inspected; a new frame is delivered.
    fn on_frame(&self, capture: &mut Capture, grab_started: Instant, frame: Grabbed) {
        capture.backoff.reset();
        let print = fingerprint(&frame.image);
        if print.is_some() && print == capture.last_print {
            // Not a fresh image: never inspected as one.
            self.stats.repeated.fetch_add(1, Ordering::Relaxed);
            capture.same_in_a_row += 1;
            if capture.same_in_a_row + 1 >= capture.stall_frames && !self.stats.set_frozen(true) {
                tracing::error!(camera = %self.name, frames = capture.same_in_a_row + 1, "camera stalled: the same frame again and again");
            }
            return;
        }
        if self.stats.set_frozen(false) {
            tracing::info!(camera = %self.name, "camera delivers new frames again");
        }
        capture.same_in_a_row = 0;
        capture.last_print = print;
        self.stats.mark_new_frame();
        if capture.interval.is_none() && self.is_live() {
            self.learn_interval(capture);
        }
        capture.seq += 1;
        if self.waiting.is_some() {
            self.deliver_triggered(grab_started, frame.image, capture.scale);
        } else {
            self.deliver(capture.seq, frame, capture.scale, capture.when_full);
        }
    }

    /// Live streams set their own rate: learn the frame interval from the
    /// stream (a smoothed average), so that a stream that stops sending is
    /// seen as stalled after `stall_frames` of its own intervals.
    fn learn_interval(&self, capture: &mut Capture) {
        let now = Instant::now();
        capture.learned = Some(match capture.learned {
            None => (now, 0.0, 0),
            Some((at, avg, n)) => {
                let dt = (now - at).as_secs_f64() * 1e3;
                let avg = if n == 0 { dt } else { 0.8 * avg + 0.2 * dt };
                if n >= 5 {
                    let limit = (avg.max(10.0) * capture.stall_frames as f64) as u64;
                    self.stats.set_stall_after_ms(limit);
                }
                (now, avg, n + 1)
            }
        });
    }

    /// A part-per-frame or free-running frame: into the queue. The part's clock starts when
    /// its frame arrived, so its decode counts in its latency and its reject is timed from
    /// where the part was, not from when the frame was ready.
    fn deliver(&self, seq: u64, frame: Grabbed, scale: u32, when_full: WhenFull) {
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        let Grabbed { image, arrived } = frame;
        let is_part = self.config.mode == CameraMode::PartPerFrame;
        let part = PartInfo {
            camera: self.name.clone(),
            part_id: seq,
            captured: arrived,
            position: None,
            captured_wall: SystemTime::now().checked_sub(arrived.elapsed()).unwrap_or_else(SystemTime::now),
            stamp: self.control.stamp(),
        };
        if is_part {
            // Announce before queueing so the controller's deadline starts at capture.
            self.events.send_blocking(PartEvent::Captured(part.clone()));
        }
        match self.queue.push(Frame { part, image, scale, is_part }, when_full) {
            Pushed::Queued => {}
            Pushed::Displaced(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Pushed::Refused(f) | Pushed::Closed(f) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                if f.is_part {
                    self.events.send_blocking(PartEvent::Unjudged(
                        f.part,
                        "inspection queue full: inference is behind the line".into(),
                    ));
                }
            }
        }
    }

    /// Triggered mode: the first frame whose grab started after a part's
    /// trigger is that part's frame (a frame from before the trigger would be
    /// an inspection of the wrong part). Frames nobody waits for are not inspected.
    fn deliver_triggered(&self, grab_started: Instant, image: Mat, scale: u32) {
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        let part = {
            let mut waiting = self.waiting.as_ref().expect("triggered").lock().unwrap_or_else(|p| p.into_inner());
            // Parts already given ERROR by their deadline are not inspected late.
            while waiting.front().is_some_and(|p| p.captured.elapsed() > self.max_age) {
                let p = waiting.pop_front().expect("checked");
                tracing::debug!(camera = %self.name, part = p.part_id, "no frame in time for a triggered part");
            }
            match waiting.front() {
                Some(p) if p.captured <= grab_started => waiting.pop_front(),
                _ => None,
            }
        };
        let Some(part) = part else { return };
        match self.queue.push(Frame { part, image, scale, is_part: true }, WhenFull::Refuse) {
            Pushed::Queued => {}
            Pushed::Displaced(_) => {}
            Pushed::Refused(f) | Pushed::Closed(f) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                self.events.send_blocking(PartEvent::Unjudged(
                    f.part,
                    "inspection queue full: inference is behind the line".into(),
                ));
            }
        }
    }

    fn is_live(&self) -> bool {
        !matches!(self.config.source, SourceConfig::File(_) | SourceConfig::Directory(_))
    }

    /// Sleep in small steps so a stop request is honoured quickly.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
        }
    }
}

/// What the capture loop carries from frame to frame, and across reopens.
struct Capture {
    backoff: Backoff,
    /// The "cannot open" log of a camera that stays away: at its start, once a minute, at its end.
    open_log: Throttle,
    /// Frames delivered so far: the part id of the last one.
    seq: u64,
    /// The configured frame interval (files paced to a line), if any.
    interval: Option<Duration>,
    stall_frames: u64,
    transform: transform::Transform,
    /// The source's decode reduction (see [`Camera::decode_reduction`]).
    scale: u32,
    /// The task's model's fit, which the reduction follows.
    fit: Option<Fit>,
    when_full: WhenFull,
    /// Fingerprint of the last new frame, to tell a repeat.
    last_print: Option<u64>,
    same_in_a_row: u64,
    /// Learning a live stream's interval: (last frame, smoothed interval in ms, intervals seen).
    learned: Option<(Instant, f64, u32)>,
}

/// How reading an open source ended.
#[derive(Debug)]
enum Streamed {
    /// Stop requested, or the source ended: the capture thread ends.
    Finished,
    /// Lost (after the backoff), or a looped file at its end: open it again.
    Reopen,
    /// A reload changed the camera's settings: take them, then open the source again.
    Reconfigure(Settings),
}

/// Hold a source to its configured rate: wait for the frame's due time. If
/// we fell behind (a slow disk), do not burst to catch up.
fn pace(next_due: &mut Instant, iv: Duration) {
    let now = Instant::now();
    if *next_due > now {
        std::thread::sleep(*next_due - now);
    }
    *next_due = (*next_due + iv).max(Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part::control::{CommandLimits, TaskControl};
    use opencv::core::{Scalar, CV_8UC3};
    use source::SourceError;
    use std::sync::Mutex;

    /// A file whose frames take a while to decode: each arrives, then is decoded.
    struct SlowDecode {
        left: u32,
        arrivals: Arc<Mutex<Vec<Instant>>>,
    }

    impl FrameSource for SlowDecode {
        fn next_frame(&mut self) -> Result<Option<Grabbed>, SourceError> {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            let arrived = Instant::now();
            // The decode; then a different image each time (repeats are never inspected).
            std::thread::sleep(Duration::from_millis(3));
            let image = Mat::new_rows_cols_with_default(8, 8, CV_8UC3, Scalar::all(f64::from(self.left * 20)))
                .expect("a small image");
            self.arrivals.lock().unwrap().push(arrived);
            Ok(Some(Grabbed { image, arrived }))
        }

        fn is_finite(&self) -> bool {
            true
        }
    }

    fn file_camera(source: SlowDecode) -> (Camera, tokio::sync::mpsc::Receiver<PartEvent>) {
        let yaml = "source: {file: line.avi}\nmode: part-per-frame\nqueue: 8\n";
        let config: CameraConfig =
            crate::config::yaml::from_node(&crate::config::yaml::parse(yaml).expect("yaml")).expect("a camera");
        let (events, announced) = Announcer::channel(16, Default::default());
        let limits = CommandLimits { threshold: (0.1, 0.9), configured: false, base: 0.5, allow_disable: false };
        let mut source = Some(source);
        let camera = Camera {
            name: "cam".into(),
            queue: Arc::new(FrameQueue::new(config.queue)),
            config,
            stats: Arc::new(CameraStats::default()),
            events,
            stop: Arc::new(AtomicBool::new(false)),
            opener: Box::new(move || {
                source
                    .take()
                    .map(|s| Box::new(s) as Box<dyn FrameSource>)
                    .ok_or_else(|| SourceError::Open { what: "test file".into(), why: "opened once".into() })
            }),
            waiting: None,
            max_age: Duration::from_secs(5),
            control: Arc::new(TaskControl::new("t", 0.5, limits)),
            reconfigure: std::sync::mpsc::channel().1,
            fit: None,
        };
        (camera, announced)
    }

    #[test]
    fn a_part_is_captured_when_its_frame_arrived_not_when_it_was_decoded() {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (camera, mut announced) = file_camera(SlowDecode { left: 3, arrivals: arrivals.clone() });
        let queue = camera.queue.clone();
        camera.spawn().expect("thread").join().expect("camera thread");
        let arrivals = arrivals.lock().unwrap().clone();
        assert_eq!(arrivals.len(), 3);
        for (i, arrived) in arrivals.iter().enumerate() {
            let frame = queue.try_pop().expect("open or closed").expect("a frame per arrival");
            assert_eq!(frame.part.part_id, i as u64 + 1);
            assert_eq!(frame.part.captured, *arrived, "part {} is stamped at its arrival", i + 1);
            match announced.try_recv() {
                Ok(PartEvent::Captured(p)) => assert_eq!(p.captured, *arrived, "announced at its arrival"),
                other => panic!("part {} not announced as captured: {other:?}", i + 1),
            }
        }
    }
}
