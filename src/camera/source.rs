//! Frame sources behind one small trait: OpenCV `VideoCapture` for files,
//! V4L2, RTSP and GStreamer, and a folder of still images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use opencv::core::Mat;
use opencv::prelude::*;
use opencv::{imgcodecs, videoio};

use crate::config::{SourceConfig, V4l2Config};

/// A frame as a source hands it over: the decoded image, and when it arrived.
pub struct Grabbed {
    pub image: Mat,
    /// When the source handed the frame over. For a JPEG frame decoded here (a raw MJPG packet,
    /// a still image) that is before its decode, which is inspection work like the model's, so
    /// a part's clock (and the latency it reports) includes it; a back end that decodes inside
    /// (FFmpeg at full size, a GStreamer pipeline) has decoded by then.
    pub arrived: Instant,
}

/// Something that yields BGR frames.
pub trait FrameSource: Send {
    /// The next frame; `Ok(None)` at the end of a file or folder.
    fn next_frame(&mut self) -> Result<Option<Grabbed>, SourceError>;
    /// True for files and folders, which end; false for live cameras, which reconnect.
    fn is_finite(&self) -> bool;
    /// The full frame's `(width, height)`, when the source knows it before the first frame.
    fn frame_size(&self) -> Option<(u32, u32)> {
        None
    }
    /// Decode frames at 1/`k` per side from the next frame on, where the source's frames are
    /// JPEG; returns the reduction in effect (1: this source decodes only at full size). A source
    /// that takes its frames compressed changes it at any time; one that does not can only start
    /// compressed, before its first frame (later it stays at full size: never less than asked).
    fn reduce(&mut self, _k: u32) -> u32 {
        1
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {what}: {why}")]
    Open { what: String, why: String },
    #[error("{what} stopped delivering frames: {why}")]
    Read { what: String, why: String },
}

/// Open the source a camera config describes. `timeout` bounds an RTSP open and
/// each read: without it, FFmpeg waits 30 s for a camera that accepted the
/// connection and then went silent, and the capture thread with it.
pub fn open(source: &SourceConfig, timeout: std::time::Duration) -> Result<Box<dyn FrameSource>, SourceError> {
    match source {
        SourceConfig::File(path) => {
            let what = format!("video file `{}`", path.display());
            if !path.is_file() {
                return Err(SourceError::Open { what, why: "no such file".into() });
            }
            Ok(Box::new(Capture::open(&path.to_string_lossy(), videoio::CAP_ANY, what, true)?))
        }
        SourceConfig::Directory(path) => Ok(Box::new(ImageFolder::open(path)?)),
        SourceConfig::Rtsp(url) => {
            let ms = |d: std::time::Duration| d.as_millis().min(i32::MAX as u128) as i32;
            // Opening reads about 2 s of stream (FFmpeg learns the frame rate from ~20 frames);
            // an open timeout shorter than that "succeeds" with a capture whose reads all fail.
            let open = timeout.saturating_mul(2).max(std::time::Duration::from_secs(10));
            let params =
                [videoio::CAP_PROP_OPEN_TIMEOUT_MSEC, ms(open), videoio::CAP_PROP_READ_TIMEOUT_MSEC, ms(timeout)];
            Ok(Box::new(Capture::open_with(url, videoio::CAP_FFMPEG, &params, format!("RTSP stream `{url}`"), false)?))
        }
        SourceConfig::Gstreamer(pipeline) => {
            Ok(Box::new(Capture::open(pipeline, videoio::CAP_GSTREAMER, "GStreamer pipeline".to_string(), false)?))
        }
        SourceConfig::V4l2(v) => Ok(Box::new(Capture::open_v4l2(v)?)),
    }
}

/// OpenCV `VideoCapture`.
pub struct Capture {
    cap: videoio::VideoCapture,
    what: String,
    finite: bool,
    /// JPEG frames taken compressed (FFmpeg's raw packets) and decoded here by libjpeg.
    raw: bool,
    /// With `raw`, the reduction per side they are decoded at (1: whole).
    reduced: u32,
    /// Frames read, to name the one that does not decode.
    frames: u64,
}

impl Capture {
    fn open(uri: &str, api: i32, what: String, finite: bool) -> Result<Self, SourceError> {
        Self::open_with(uri, api, &[], what, finite)
    }

    fn open_with(uri: &str, api: i32, params: &[i32], what: String, finite: bool) -> Result<Self, SourceError> {
        let fail = |why: String| SourceError::Open { what: what.clone(), why };
        let cap = videoio::VideoCapture::from_file_with_params(uri, api, &opencv::core::Vector::from_slice(params))
            .map_err(|e| fail(e.message.clone()))?;
        if !cap.is_opened().unwrap_or(false) {
            return Err(fail("OpenCV could not open it (check the path or URL, the codec, and that OpenCV was built with this back end)".into()));
        }
        Ok(Capture { cap, what, finite, raw: false, reduced: 1, frames: 0 })
    }

    fn open_v4l2(v: &V4l2Config) -> Result<Self, SourceError> {
        let what = format!("V4L2 device `{}`", v.device.display());
        if !v.device.exists() {
            return Err(SourceError::Open {
                what,
                why: "no such device (is the camera plugged in? `v4l2-ctl --list-devices` lists them)".into(),
            });
        }
        let mut cap = Self::open(&v.device.to_string_lossy(), videoio::CAP_V4L2, what, false)?;
        let set = |cap: &mut videoio::VideoCapture, prop: i32, value: f64| {
            // A camera that refuses a setting keeps its own; the frames it
            // delivers are still usable, so this is logged rather than fatal.
            if !cap.set(prop, value).unwrap_or(false) {
                tracing::warn!(device = %v.device.display(), prop, value, "camera refused a capture setting");
            }
        };
        if let Some(f) = &v.fourcc {
            let b: Vec<char> = f.chars().collect();
            if let Ok(code) = videoio::VideoWriter::fourcc(b[0], b[1], b[2], b[3]) {
                set(&mut cap.cap, videoio::CAP_PROP_FOURCC, code as f64);
            }
        }
        if let Some(w) = v.width {
            set(&mut cap.cap, videoio::CAP_PROP_FRAME_WIDTH, w as f64);
        }
        if let Some(h) = v.height {
            set(&mut cap.cap, videoio::CAP_PROP_FRAME_HEIGHT, h as f64);
        }
        if let Some(fps) = v.fps {
            set(&mut cap.cap, videoio::CAP_PROP_FPS, fps);
        }
        Ok(cap)
    }
}

/// The four characters of a `CAP_PROP_FOURCC` value.
fn fourcc(code: f64) -> String {
    let c = code as u32;
    (0..4).map(|i| char::from(((c >> (8 * i)) & 0xff) as u8)).collect()
}

/// The `imread`/`imdecode` flag that decodes colour at 1/`k` per side.
pub fn reduced_flag(k: u32) -> i32 {
    match k {
        8 => imgcodecs::IMREAD_REDUCED_COLOR_8,
        4 => imgcodecs::IMREAD_REDUCED_COLOR_4,
        2 => imgcodecs::IMREAD_REDUCED_COLOR_2,
        _ => imgcodecs::IMREAD_COLOR,
    }
}

impl FrameSource for Capture {
    fn next_frame(&mut self) -> Result<Option<Grabbed>, SourceError> {
        let read_error = |e: opencv::Error| SourceError::Read { what: self.what.clone(), why: e.message };
        // `grab` then `retrieve` (what `read` does in one call) so that the arrival is stamped
        // between them: `grab` takes the frame from the device, stream or file (FFmpeg also
        // decodes it there unless `raw`), `retrieve` converts it (or, with `raw`, hands over
        // the packet that is decoded below).
        let got = self.cap.grab().map_err(read_error)?;
        let arrived = Instant::now();
        let mut frame = Mat::default();
        let got = got && self.cap.retrieve(&mut frame, 0).map_err(read_error)?;
        self.frames += 1;
        if got && !frame.empty() && self.raw {
            // A raw packet: one JPEG image. libjpeg scales in its inverse DCT, so a 1/8 frame
            // costs a fraction of a full decode; a packet that is not a whole JPEG is an error
            // naming the frame (FFmpeg would have concealed it), not a skipped part.
            let packet = frame;
            return match imgcodecs::imdecode(&packet, reduced_flag(self.reduced)) {
                Ok(image) if !image.empty() => Ok(Some(Grabbed { image, arrived })),
                _ => Err(SourceError::Read {
                    what: self.what.clone(),
                    why: format!(
                        "frame {} ({} bytes) is not a decodable JPEG at 1/{}; set `decode: full` on this camera if its stream is not plain MJPG",
                        self.frames,
                        packet.total(),
                        self.reduced
                    ),
                }),
            };
        }
        if got && !frame.empty() {
            return Ok(Some(Grabbed { image: frame, arrived }));
        }
        if self.finite {
            Ok(None)
        } else {
            Err(SourceError::Read { what: self.what.clone(), why: "no frame (stream ended or device lost)".into() })
        }
    }

    fn is_finite(&self) -> bool {
        self.finite
    }

    fn frame_size(&self) -> Option<(u32, u32)> {
        let w = self.cap.get(videoio::CAP_PROP_FRAME_WIDTH).ok()?;
        let h = self.cap.get(videoio::CAP_PROP_FRAME_HEIGHT).ok()?;
        (w >= 1.0 && h >= 1.0).then_some((w as u32, h as u32))
    }

    /// Only MJPG streams read by FFmpeg (files, RTSP): their raw packets are whole JPEG images.
    /// Other codecs (H.264, raw YUV) decode at full size. V4L2 MJPG stays at full size too:
    /// OpenCV's V4L2 back end can hand over its raw buffers, but no camera here could test it.
    fn reduce(&mut self, k: u32) -> u32 {
        if self.raw {
            self.reduced = k.max(1);
            return self.reduced;
        }
        if k <= 1 || self.frames > 0 {
            return 1;
        }
        let backend = self.cap.get_backend_name().unwrap_or_default();
        let codec = fourcc(self.cap.get(videoio::CAP_PROP_FOURCC).unwrap_or(0.0));
        if backend != "FFMPEG" || !codec.eq_ignore_ascii_case("mjpg") {
            return 1;
        }
        match self.cap.set(videoio::CAP_PROP_FORMAT, -1.0) {
            Ok(true) => {
                (self.raw, self.reduced) = (true, k);
                k
            }
            _ => 1,
        }
    }
}

/// Still images from a folder, in file-name order.
pub struct ImageFolder {
    files: Vec<PathBuf>,
    next: usize,
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

impl ImageFolder {
    pub fn open(dir: &Path) -> Result<Self, SourceError> {
        let what = format!("image folder `{}`", dir.display());
        let entries =
            std::fs::read_dir(dir).map_err(|e| SourceError::Open { what: what.clone(), why: e.to_string() })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(SourceError::Open {
                what,
                why: format!("it holds no images ({})", IMAGE_EXTENSIONS.join(", ")),
            });
        }
        Ok(ImageFolder { files, next: 0 })
    }
}

impl FrameSource for ImageFolder {
    fn next_frame(&mut self) -> Result<Option<Grabbed>, SourceError> {
        while let Some(path) = self.files.get(self.next) {
            self.next += 1;
            // A still image arrives when it is asked for; reading the file is its decode.
            let arrived = Instant::now();
            match imgcodecs::imread(&*path.to_string_lossy(), imgcodecs::IMREAD_COLOR) {
                Ok(image) if !image.empty() => return Ok(Some(Grabbed { image, arrived })),
                // One unreadable file must not stop the folder; it is skipped and said.
                _ => {
                    tracing::warn!(file = %path.display(), "image cannot be decoded; skipped (is it a complete png/jpg/bmp/tif?)")
                }
            }
        }
        Ok(None)
    }

    fn is_finite(&self) -> bool {
        true
    }
}
