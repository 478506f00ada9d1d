//! The `cameras` section: each camera's source, and the timing and framing options that fit it.

use std::time::Duration;

use super::super::diagnostic::Collector;
use super::super::types::*;
use super::join;

/// Every camera.
pub(super) fn check(config: &Config, c: &mut Collector) {
    for (name, cam) in &config.cameras {
        camera(name, cam, c);
    }
}

/// One camera: its source, then the options that depend on whether it is live.
fn camera(name: &str, cam: &CameraConfig, c: &mut Collector) {
    let path = ["cameras", name];
    let at = |k: &'static str| join(&path, &[k]);
    let live = !matches!(cam.source, SourceConfig::File(_) | SourceConfig::Directory(_));
    source(&path, &cam.source, c);
    if live && cam.looping {
        c.at(&at("loop"), "`loop` only applies to files and folders", "remove it for a live camera");
    }
    let t = cam.timeout.get();
    if t < Duration::from_millis(100) || t > Duration::from_secs(120) {
        c.at(
            &at("timeout"),
            format!("timeout {} is out of range", cam.timeout),
            "use 100ms to 120s: long enough for the camera to answer, short enough to notice it died",
        );
    }
    if let Some([x, y, w, h]) = cam.crop {
        if w == 0 || h == 0 {
            c.at(
                &at("crop"),
                format!("crop [{x}, {y}, {w}, {h}] is empty"),
                "write it as [x, y, width, height] in pixels of the (rotated) frame, width and height above 0",
            );
        }
    }
    if let Some(fps) = cam.fps {
        if !(fps > 0.0 && fps <= 1000.0) {
            c.at(&at("fps"), format!("fps {fps} is out of range"), "use a rate above 0 and at most 1000");
        } else if live {
            c.at(
                &at("fps"),
                "`fps` paces files and folders only",
                "set the rate of a V4L2 camera under `source.v4l2.fps`; live streams set their own rate",
            );
        }
    }
    if cam.queue == 0 || cam.queue > 64 {
        c.at(
            &at("queue"),
            format!("queue {} is out of range", cam.queue),
            "use 1 to 64 frames; 2 to 4 keeps verdicts fresh",
        );
    }
    if let SourceConfig::V4l2(v) = &cam.source {
        fourcc(&path, v, c);
    }
}

/// Files and folders exist, stream URLs and pipelines have the form OpenCV takes.
fn source(path: &[&str], source: &SourceConfig, c: &mut Collector) {
    match source {
        SourceConfig::File(p) if !p.is_file() => c.at(
            &join(path, &["source", "file"]),
            format!("video file `{}` does not exist", p.display()),
            "check the path (relative paths start at the config file's folder)",
        ),
        SourceConfig::Directory(p) if !p.is_dir() => c.at(
            &join(path, &["source", "directory"]),
            format!("image folder `{}` does not exist", p.display()),
            "check the path (relative paths start at the config file's folder)",
        ),
        SourceConfig::Rtsp(url) if !(url.starts_with("rtsp://") || url.starts_with("rtsps://")) => c.at(
            &join(path, &["source", "rtsp"]),
            format!("`{url}` is not an RTSP URL"),
            "write it as `rtsp://host:554/path`",
        ),
        SourceConfig::Gstreamer(p) if !p.contains("appsink") => c.at(
            &join(path, &["source", "gstreamer"]),
            "the GStreamer pipeline does not end in `appsink`",
            "end it with `! appsink drop=true max-buffers=1` so OpenCV can take the frames",
        ),
        _ => {}
    }
}

/// A V4L2 pixel format is four ASCII characters.
fn fourcc(path: &[&str], v: &V4l2Config, c: &mut Collector) {
    if let Some(fourcc) = &v.fourcc {
        if fourcc.len() != 4 || !fourcc.is_ascii() {
            c.at(
                &join(path, &["source", "v4l2", "fourcc"]),
                format!("`{fourcc}` is not a FourCC"),
                "use four characters such as `MJPG` or `YUYV`",
            );
        }
    }
}
