//! Frame sources behind one small trait: OpenCV `VideoCapture` for files,
//! V4L2, RTSP and GStreamer, and a folder of still images.
//!
//! JPEG frames are taken compressed wherever a back end hands them over that way, so that
//! libjpeg can decode them at the size the model needs: FFmpeg's raw packets (MJPG files, RTSP
//! MJPEG), and a GStreamer `appsink` fed `image/jpeg`, which is also how a V4L2 camera in MJPG
//! is read (OpenCV's own V4L2 back end would decode every frame at full size first).

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
            let mut cap = Capture::open(pipeline, videoio::CAP_GSTREAMER, "GStreamer pipeline".to_string(), false)?;
            cap.raw = appsink_takes_jpeg(pipeline);
            Ok(Box::new(cap))
        }
        SourceConfig::V4l2(v) if v.fourcc.as_deref().is_some_and(|f| f.eq_ignore_ascii_case("MJPG")) => {
            if videoio::has_backend(videoio::VideoCaptureAPIs::CAP_GSTREAMER).unwrap_or(false) {
                Ok(Box::new(Capture::open_v4l2_mjpg(v)?))
            } else {
                // An OpenCV built without GStreamer still reads the camera, at full size (said
                // once, not at every reconnect).
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::warn!(device = %v.device.display(), "OpenCV has no GStreamer back end: MJPG cameras are read by OpenCV's V4L2 back end and decoded at full size");
                });
                Ok(Box::new(Capture::open_v4l2(v)?))
            }
        }
        SourceConfig::V4l2(v) => Ok(Box::new(Capture::open_v4l2(v)?)),
    }
}

/// True when a GStreamer pipeline hands its `appsink` JPEG images: the element before the sink
/// is an `image/jpeg` caps filter. OpenCV then passes each buffer on as it came (one row of
/// bytes), and its frames can be decoded reduced.
fn appsink_takes_jpeg(pipeline: &str) -> bool {
    let elements: Vec<&str> = pipeline.split('!').map(str::trim).collect();
    match elements.iter().rposition(|e| e.split_whitespace().next() == Some("appsink")) {
        Some(sink) if sink > 0 => {
            let before = elements[sink - 1];
            before == "image/jpeg" || before.starts_with("image/jpeg,") || before.starts_with("image/jpeg ")
        }
        _ => false,
    }
}

/// The GStreamer pipeline that reads a V4L2 camera's MJPG frames as the camera sends them, at
/// the size and rate the config asks for (a camera that cannot give them fails to start, and
/// the error says how to list what it offers). `source` is the element that produces them:
/// `v4l2src` for the device, a live test source in the tests.
fn v4l2_mjpg_pipeline(source: &str, v: &V4l2Config) -> String {
    let mut caps = String::from("image/jpeg");
    if let Some(w) = v.width {
        caps += &format!(",width={w}");
    }
    if let Some(h) = v.height {
        caps += &format!(",height={h}");
    }
    if let Some(fps) = v.fps {
        let (n, d) = frame_rate(fps);
        caps += &format!(",framerate={n}/{d}");
    }
    // `sync=false`: a live camera's frame is taken when it arrives, not held to the clock.
    // `max-buffers=1 drop=false`: at most one frame waits in the sink; when the capture thread
    // is late the camera's own buffers fill, as with any V4L2 reader.
    format!("{source} ! {caps} ! appsink sync=false max-buffers=1 drop=false")
}

/// `v4l2src` for a device path, quoted for GStreamer's pipeline syntax.
fn v4l2src(device: &Path) -> String {
    let path = device.to_string_lossy().replace('\\', "\\\\").replace('"', "\\\"");
    format!("v4l2src device=\"{path}\"")
}

/// A frame rate as the fraction V4L2 drivers report: whole rates as `n/1`, the NTSC family
/// (29.97, 59.94, 23.976) as `n*1000/1001`, anything else in thousandths, reduced.
fn frame_rate(fps: f64) -> (u64, u64) {
    let ntsc = fps * 1001.0 / 1000.0;
    if (fps - fps.round()).abs() < 1e-6 {
        (fps.round() as u64, 1)
    } else if (ntsc - ntsc.round()).abs() < 1e-3 {
        (ntsc.round() as u64 * 1000, 1001)
    } else {
        let (n, d) = ((fps * 1000.0).round() as u64, 1000);
        let g = crate::util::gcd(n, d); // never 0: d is 1000
        (n / g, d / g)
    }
}

/// OpenCV `VideoCapture`.
pub struct Capture {
    cap: videoio::VideoCapture,
    what: String,
    finite: bool,
    /// JPEG frames taken compressed (FFmpeg's raw packets, a GStreamer `image/jpeg` sink) and
    /// decoded here by libjpeg.
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
        let what = device_present(v, "")?;
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

    /// A V4L2 camera in MJPG, read through GStreamer's `v4l2src` so that its frames arrive
    /// compressed and are decoded here at the reduction the model allows.
    fn open_v4l2_mjpg(v: &V4l2Config) -> Result<Self, SourceError> {
        let what = device_present(v, " (MJPG)")?;
        Self::open_mjpg_pipeline(&v4l2src(&v.device), v, what)
    }

    fn open_mjpg_pipeline(source: &str, v: &V4l2Config, what: String) -> Result<Self, SourceError> {
        let pipeline = v4l2_mjpg_pipeline(source, v);
        let mut cap = Self::open(&pipeline, videoio::CAP_GSTREAMER, what, false).map_err(|e| match e {
            SourceError::Open { what, .. } => SourceError::Open {
                why: format!(
                    "GStreamer could not start `{pipeline}`: check that the camera offers MJPG at this size and rate (`v4l2-ctl -d {} --list-formats-ext`), that no other program holds it, and that GStreamer's v4l2src is installed (Debian: gstreamer1.0-plugins-good)",
                    v.device.display()
                ),
                what,
            },
            other => other,
        })?;
        cap.raw = true;
        Ok(cap)
    }
}

/// The camera's name for errors (`V4L2 device `/dev/video0``, then `how`), once its device node
/// exists: a missing one is an error that says how to look for it.
fn device_present(v: &V4l2Config, how: &str) -> Result<String, SourceError> {
    let what = format!("V4L2 device `{}`{how}", v.device.display());
    if v.device.exists() {
        return Ok(what);
    }
    Err(SourceError::Open {
        what,
        why: "no such device (is the camera plugged in? `v4l2-ctl --list-devices` lists them)".into(),
    })
}

/// A frame that is one row of bytes starting with a JPEG marker: a compressed image that a
/// back end handed over as it came.
fn is_jpeg_packet(frame: &Mat) -> bool {
    frame.rows() == 1
        && frame.typ() == opencv::core::CV_8UC1
        && frame.data_bytes().is_ok_and(|b| b.starts_with(&[0xff, 0xd8]))
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
        // A GStreamer pipeline that ends in JPEG without saying so (no `image/jpeg` before its
        // appsink) also hands over packets: decoded at full size, never inspected as bytes.
        if got && !frame.empty() && (self.raw || is_jpeg_packet(&frame)) {
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

    /// Sources whose frames arrive as JPEG images: MJPG read by FFmpeg (files, RTSP), whose
    /// packets it is asked for here, and GStreamer sinks fed `image/jpeg` (V4L2 cameras in
    /// MJPG among them), compressed from the start. Other codecs (H.264, raw YUV) decode at
    /// full size.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v4l2(width: Option<u32>, height: Option<u32>, fps: Option<f64>) -> V4l2Config {
        V4l2Config { device: "/dev/video0".into(), width, height, fps, fourcc: Some("MJPG".into()) }
    }

    #[test]
    fn frame_rates_are_the_fractions_drivers_report() {
        assert_eq!(frame_rate(30.0), (30, 1));
        assert_eq!(frame_rate(29.97), (30000, 1001));
        assert_eq!(frame_rate(59.94), (60000, 1001));
        assert_eq!(frame_rate(23.976), (24000, 1001));
        assert_eq!(frame_rate(7.5), (15, 2));
        assert_eq!(frame_rate(12.5), (25, 2));
    }

    #[test]
    fn a_v4l2_mjpg_camera_is_read_compressed_at_the_size_and_rate_asked() {
        let p = v4l2_mjpg_pipeline(
            &v4l2src(Path::new("/dev/v4l/by-id/usb-Cam \"A\"-video-index0")),
            &v4l2(Some(1920), Some(1080), Some(29.97)),
        );
        assert_eq!(
            p,
            r#"v4l2src device="/dev/v4l/by-id/usb-Cam \"A\"-video-index0" ! image/jpeg,width=1920,height=1080,framerate=30000/1001 ! appsink sync=false max-buffers=1 drop=false"#
        );
        assert!(appsink_takes_jpeg(&p));
        // Nothing asked: the camera's own MJPG mode.
        assert_eq!(
            v4l2_mjpg_pipeline("v4l2src", &v4l2(None, None, None)),
            "v4l2src ! image/jpeg ! appsink sync=false max-buffers=1 drop=false"
        );
    }

    #[test]
    fn only_a_sink_fed_jpeg_caps_takes_jpeg() {
        assert!(appsink_takes_jpeg("rtspsrc location=rtsp://cam/1 ! rtpjpegdepay ! image/jpeg ! appsink"));
        assert!(appsink_takes_jpeg("v4l2src ! image/jpeg,width=640 ! appsink name=s max-buffers=1"));
        assert!(!appsink_takes_jpeg("v4l2src ! image/jpeg ! jpegdec ! videoconvert ! appsink"));
        assert!(!appsink_takes_jpeg("videotestsrc ! video/x-raw,format=BGR ! appsink"));
        assert!(!appsink_takes_jpeg("image/jpeg ! fakesink"));
        assert!(!appsink_takes_jpeg("appsink"));
    }

    /// A live MJPG camera as GStreamer delivers it: `videotestsrc is-live` encoded by `jpegenc`
    /// stands where `v4l2src` would, and the rest of the pipeline is the one a V4L2 camera gets.
    fn live_mjpg(v: &V4l2Config) -> Capture {
        let (w, h) = (v.width.unwrap(), v.height.unwrap());
        let (n, d) = frame_rate(v.fps.unwrap());
        let camera = format!(
            "videotestsrc is-live=true pattern=ball num-buffers=30 ! video/x-raw,width={w},height={h},framerate={n}/{d} ! jpegenc"
        );
        Capture::open_mjpg_pipeline(&camera, v, "live test camera".into()).expect("GStreamer with jpegenc")
    }

    #[test]
    fn a_live_mjpg_camera_decodes_at_the_reduction_from_its_first_frame() {
        let v = v4l2(Some(1920), Some(1080), Some(30.0));
        let mut cap = live_mjpg(&v);
        assert_eq!(cap.frame_size(), Some((1920, 1080)), "the size is known before the first frame");
        assert_eq!(cap.reduce(8), 8);
        let first = cap.next_frame().unwrap().unwrap();
        assert_eq!((first.image.cols(), first.image.rows()), (240, 135));
        assert_eq!(first.image.typ(), opencv::core::CV_8UC3);
        // It may change between frames, as with FFmpeg's packets.
        assert_eq!(cap.reduce(1), 1);
        let full = cap.next_frame().unwrap().unwrap();
        assert_eq!((full.image.cols(), full.image.rows()), (1920, 1080));
    }

    #[test]
    fn jpeg_from_a_pipeline_that_did_not_say_so_is_decoded_not_passed_on_as_bytes() {
        let p = "videotestsrc num-buffers=3 ! video/x-raw,width=640,height=480 ! jpegenc ! appsink";
        let mut cap = Capture::open(p, videoio::CAP_GSTREAMER, "test pipeline".into(), false).unwrap();
        assert_eq!(cap.reduce(4), 1, "not known to be JPEG before its first frame");
        let frame = cap.next_frame().unwrap().unwrap();
        assert_eq!((frame.image.cols(), frame.image.rows(), frame.image.typ()), (640, 480, opencv::core::CV_8UC3));
    }

    #[test]
    fn a_v4l2_mjpg_camera_that_cannot_start_says_how_to_find_out_why() {
        let v = V4l2Config { device: "/dev/null".into(), ..v4l2(Some(1920), Some(1080), Some(30.0)) };
        let err = Capture::open_v4l2_mjpg(&v).err().expect("/dev/null is no camera").to_string();
        assert!(err.contains("V4L2 device `/dev/null` (MJPG)"), "{err}");
        assert!(err.contains("v4l2-ctl -d /dev/null --list-formats-ext"), "{err}");
        let missing = V4l2Config { device: "/dev/video-missing".into(), ..v };
        let err = Capture::open_v4l2_mjpg(&missing).err().unwrap().to_string();
        assert!(err.contains("no such device"), "{err}");
    }
}
