//! A judged part as the operator sees it: the frame the model judged, scaled to the page, with
//! the verdict on a coloured band and what the model saw drawn on it (boxes with class and
//! score for detectors, masks for segmenters, the class scores for classifiers, the anomaly
//! score and its heat map for anomaly models), JPEG-encoded. Runs on tokio's blocking threads when a viewer asks, never on an
//! inspection thread; the shot's own frame is never changed (other viewers share it).

use opencv::core::{Mat, Point, Rect, Scalar, Size, Vector, CV_8UC1, CV_8UC3};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};

use crate::part::view::Shot;
use crate::part::Verdict;

/// A picture asked for, and where its JPEG goes.
type Job = (std::sync::Arc<Shot>, tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>);

/// The one thread that draws the page's pictures, at the lowest scheduling priority
/// (`SCHED_IDLE`): it runs only when inspection leaves a core idle, so viewers never take time
/// slices from a part on a busy node (docs/benchmarks.md, "The operator page and its viewers").
#[derive(Clone)]
pub struct Drawer {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

/// Pictures waiting for the drawer; a viewer asking for more gets "busy" rather than a queue.
const WAITING: usize = 8;

impl Drawer {
    pub fn start() -> std::io::Result<Drawer> {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(WAITING);
        std::thread::Builder::new().name("page-draw".into()).spawn(move || {
            use thread_priority::unix::{
                set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadSchedulePolicy,
            };
            let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
            if let Err(e) =
                set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, idle)
            {
                tracing::warn!(error = ?e, "the page's drawing thread keeps the normal priority (SCHED_IDLE refused)");
            }
            while let Ok((shot, reply)) = rx.recv() {
                let _ = reply.send(jpeg(&shot));
            }
        })?;
        Ok(Drawer { jobs })
    }

    /// The shot's JPEG, drawn on the drawer's thread.
    pub async fn draw(&self, shot: std::sync::Arc<Shot>) -> Result<Vec<u8>, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs.try_send((shot, tx)).map_err(|_| "the page's drawing thread is busy; try again".to_string())?;
        rx.await.map_err(|_| "the page's drawing thread has stopped".to_string())?
    }
}

/// Widest image sent to a viewer: enough to see a defect, small enough for a few fps on a
/// plant network.
pub const MAX_WIDTH: i32 = 960;
/// Narrowest: a 256-pixel frame is drawn at twice its size, or its labels would not fit.
pub const MIN_WIDTH: i32 = 512;
const JPEG_QUALITY: i32 = 80;
const BAND: i32 = 28;

/// BGR colours of the verdicts (the stack light's: green, red, amber; ERROR magenta).
fn colour(v: Verdict) -> Scalar {
    match v {
        Verdict::Ok => Scalar::new(60.0, 170.0, 40.0, 0.0),
        Verdict::Ng => Scalar::new(40.0, 40.0, 220.0, 0.0),
        Verdict::Uncertain => Scalar::new(0.0, 170.0, 240.0, 0.0),
        Verdict::Error => Scalar::new(200.0, 40.0, 200.0, 0.0),
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "OK",
        Verdict::Ng => "NG",
        Verdict::Uncertain => "UNCERTAIN",
        Verdict::Error => "ERROR",
    }
}

fn cv(e: opencv::Error) -> String {
    e.message
}

/// The shot as a JPEG with its overlay.
pub fn jpeg(shot: &Shot) -> Result<Vec<u8>, String> {
    let (mut img, scale) = match shot.image.as_ref().filter(|m| !m.empty()) {
        Some(frame) => scaled_bgr(frame)?,
        None => (blank()?, 1.0),
    };
    if scale > 0.0 {
        draw_heat(&mut img, shot, scale)?;
        draw_masks(&mut img, shot, scale)?;
        draw_boxes(&mut img, shot, scale)?;
    }
    draw_band(&mut img, shot)?;
    let mut buf = Vector::<u8>::new();
    let params = Vector::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, JPEG_QUALITY]);
    imgcodecs::imencode(".jpg", &img, &mut buf, &params).map_err(cv)?;
    Ok(buf.to_vec())
}

/// A BGR copy of `frame` no wider than [`MAX_WIDTH`], with room for the band on top, and the
/// scale from frame pixels to picture pixels.
fn scaled_bgr(frame: &Mat) -> Result<(Mat, f64), String> {
    let bgr = match frame.channels() {
        3 => frame.try_clone().map_err(cv)?,
        1 | 4 => {
            let code = if frame.channels() == 1 { imgproc::COLOR_GRAY2BGR } else { imgproc::COLOR_BGRA2BGR };
            let mut m = Mat::default();
            imgproc::cvt_color_def(frame, &mut m, code).map_err(cv)?;
            m
        }
        n => return Err(format!("a frame with {n} channels cannot be shown")),
    };
    // Large frames shrink to MAX_WIDTH; small ones grow to MIN_WIDTH, so the band and the
    // labels (drawn at a fixed size) stay readable.
    let cols = f64::from(bgr.cols());
    let scale = (f64::from(MAX_WIDTH) / cols).min(1.0).max(f64::from(MIN_WIDTH) / cols);
    let body = if scale != 1.0 {
        let mut resized = Mat::default();
        let size = Size::new((cols * scale).round() as i32, (f64::from(bgr.rows()) * scale).round() as i32);
        // INTER_LINEAR both ways: INTER_AREA looks a little better shrinking a 1080p frame but
        // costs several times the CPU, taken from inspection on a busy node.
        let how = imgproc::INTER_LINEAR;
        imgproc::resize(&bgr, &mut resized, size, 0.0, 0.0, how).map_err(cv)?;
        resized
    } else {
        bgr
    };
    let mut out = Mat::default();
    opencv::core::copy_make_border(&body, &mut out, BAND, 0, 0, 0, opencv::core::BORDER_CONSTANT, Scalar::all(30.0))
        .map_err(cv)?;
    Ok((out, scale))
}

/// A grey picture for a part that had no frame (ERROR before inference).
fn blank() -> Result<Mat, String> {
    let mut m = Mat::new_rows_cols_with_default(240 + BAND, 480, CV_8UC3, Scalar::all(70.0)).map_err(cv)?;
    put(&mut m, "no frame", Point::new(180, 140 + BAND), 0.8, Scalar::all(220.0))?;
    Ok(m)
}

fn put(img: &mut Mat, text: &str, at: Point, size: f64, colour: Scalar) -> Result<(), String> {
    imgproc::put_text(img, text, at, imgproc::FONT_HERSHEY_SIMPLEX, size, colour, 1, imgproc::LINE_AA, false)
        .map_err(cv)
}

/// The verdict band: verdict, score against threshold, part and model; the class scores of a
/// classifier (best three) or the reason for an ERROR under it.
fn draw_band(img: &mut Mat, shot: &Shot) -> Result<(), String> {
    let width = img.cols();
    imgproc::rectangle(img, Rect::new(0, 0, width, BAND), colour(shot.verdict), -1, imgproc::LINE_8, 0).map_err(cv)?;
    let score = if shot.verdict == Verdict::Error {
        String::new()
    } else {
        format!(" {:.2} (NG from {:.2})", shot.ng_score, shot.threshold)
    };
    let head = format!("{}{score}  part {}  {}", verdict_name(shot.verdict), shot.part_id, shot.model);
    put(img, &head, Point::new(6, 19), 0.5, Scalar::all(255.0))?;
    let mut y = BAND + 18;
    if let Some(e) = &shot.error {
        let short: String = e.chars().take(90).collect();
        put(img, &short, Point::new(6, y), 0.45, Scalar::new(200.0, 120.0, 255.0, 0.0))?;
        return Ok(());
    }
    if shot.detections.is_empty() && shot.scores.len() > 1 {
        let mut ranked: Vec<(usize, f32)> = shot.scores.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (i, s) in ranked.into_iter().take(3) {
            let name = shot.classes.get(i).map_or("?", String::as_str);
            put(img, &format!("{name} {s:.2}"), Point::new(6, y), 0.45, Scalar::all(255.0))?;
            y += 16;
        }
    }
    Ok(())
}

fn draw_boxes(img: &mut Mat, shot: &Shot, scale: f64) -> Result<(), String> {
    let c = colour(if shot.verdict == Verdict::Ok { Verdict::Ok } else { Verdict::Ng });
    // Boxes are in the camera's full-frame pixels; the picture is of the frame as decoded.
    let scale = scale / f64::from(shot.image_scale.max(1));
    for d in &shot.detections {
        let [x1, y1, x2, y2] = d.bbox.map(|v| f64::from(v) * scale);
        let rect = Rect::new(x1 as i32, y1 as i32 + BAND, (x2 - x1).max(1.0) as i32, (y2 - y1).max(1.0) as i32);
        imgproc::rectangle(img, rect, c, 2, imgproc::LINE_8, 0).map_err(cv)?;
        let at = Point::new(x1 as i32, (y1 as i32 + BAND - 4).max(BAND + 12));
        put(img, &format!("{} {:.2}", d.class, d.score), at, 0.45, c)?;
    }
    Ok(())
}

/// An anomaly model's map over the picture where it reaches 90 % of the NG threshold: blue
/// there, red at the map's peak or at 110 % of the threshold, whichever is higher, so red shows
/// only on a map that crosses the threshold. Below, the picture stays clean: anomalib's
/// normalised maps of good surfaces lie just under the threshold (0.40-0.49 at 0.5 for the
/// committed model), so a fixed 0-1 scale would tint every frame. The map covers the frame the
/// model saw.
fn draw_heat(img: &mut Mat, shot: &Shot, scale: f64) -> Result<(), String> {
    let (Some(frame), Some(heat)) = (&shot.image, &shot.heat) else { return Ok(()) };
    if heat.values.len() != heat.height * heat.width || heat.values.is_empty() {
        return Ok(());
    }
    let threshold = if shot.threshold.is_finite() && shot.threshold > 0.0 { shot.threshold } else { 0.5 };
    let low = 0.9 * f64::from(threshold);
    let peak = heat.values.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
    let high = f64::from(peak).max(1.1 * f64::from(threshold));
    let size = Size::new((f64::from(frame.cols()) * scale) as i32, (f64::from(frame.rows()) * scale) as i32);
    let map = Mat::new_rows_cols_with_data(heat.height as i32, heat.width as i32, &heat.values[..]).map_err(cv)?;
    let mut resized = Mat::default();
    imgproc::resize(&map, &mut resized, size, 0.0, 0.0, imgproc::INTER_LINEAR).map_err(cv)?;
    let mut hot = Mat::default();
    imgproc::threshold(&resized, &mut hot, low, 255.0, imgproc::THRESH_BINARY).map_err(cv)?;
    let mut hot8 = Mat::default();
    hot.convert_to(&mut hot8, CV_8UC1, 1.0, 0.0).map_err(cv)?;
    // low -> 0, high -> 223 (saturating), then blue to red: JET's brightest red is at 7/8 of its
    // range, above it the red darkens.
    let span = (high - low).max(1e-3);
    let mut level = Mat::default();
    resized.convert_to(&mut level, CV_8UC1, 223.0 / span, -223.0 * low / span).map_err(cv)?;
    let mut coloured = Mat::default();
    imgproc::apply_color_map(&level, &mut coloured, imgproc::COLORMAP_JET).map_err(cv)?;
    let mut body = Mat::roi_mut(img, Rect::new(0, BAND, size.width, size.height)).map_err(cv)?;
    let mut tinted = Mat::default();
    opencv::core::add_weighted(&body, 0.5, &coloured, 0.5, 0.0, &mut tinted, -1).map_err(cv)?;
    tinted.copy_to_masked(&mut body, &hot8).map_err(cv)?;
    Ok(())
}

/// Segmentation masks, tinted red over the picture.
fn draw_masks(img: &mut Mat, shot: &Shot, scale: f64) -> Result<(), String> {
    let Some(frame) = &shot.image else { return Ok(()) };
    let (rows, cols) = (frame.rows(), frame.cols());
    let masks: Vec<&Vec<bool>> = shot
        .detections
        .iter()
        .filter_map(|d| d.mask.as_deref())
        .filter(|m| m.len() == (rows * cols) as usize)
        .collect();
    if masks.is_empty() {
        return Ok(());
    }
    let union: Vec<u8> =
        (0..(rows * cols) as usize).map(|i| if masks.iter().any(|m| m[i]) { 255 } else { 0 }).collect();
    let full = Mat::new_rows_cols_with_data(rows, cols, &union).map_err(cv)?;
    let mut mask = Mat::default();
    let size = Size::new((f64::from(cols) * scale) as i32, (f64::from(rows) * scale) as i32);
    imgproc::resize(&full, &mut mask, size, 0.0, 0.0, imgproc::INTER_NEAREST).map_err(cv)?;
    debug_assert_eq!(mask.typ(), CV_8UC1);
    let mut body = Mat::roi_mut(img, Rect::new(0, BAND, size.width, size.height)).map_err(cv)?;
    let red = Mat::new_rows_cols_with_default(size.height, size.width, CV_8UC3, Scalar::new(0.0, 0.0, 255.0, 0.0))
        .map_err(cv)?;
    let mut tinted = Mat::default();
    opencv::core::add_weighted(&body, 0.55, &red, 0.45, 0.0, &mut tinted, -1).map_err(cv)?;
    tinted.copy_to_masked(&mut body, &mask).map_err(cv)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part::Detection;
    use std::sync::Arc;
    use std::time::SystemTime;

    fn shot(verdict: Verdict, image: Option<Mat>, detections: Vec<Detection>) -> Shot {
        Shot {
            seq: 1,
            task: "t".into(),
            camera: "top".into(),
            part_id: 7,
            captured: SystemTime::now(),
            verdict,
            model: "m@1".into(),
            classes: vec!["good".to_string(), "scratch".to_string()].into(),
            scores: vec![0.1, 0.9],
            ng_score: 0.9,
            threshold: 0.5,
            detections,
            heat: None,
            error: (verdict == Verdict::Error).then(|| "no verdict within the inference timeout".to_string()),
            image,
            image_scale: 1,
        }
    }

    fn decode(bytes: &[u8]) -> Mat {
        let m = imgcodecs::imdecode(&Vector::from_slice(bytes), imgcodecs::IMREAD_COLOR).unwrap();
        assert!(!m.empty());
        m
    }

    #[test]
    fn a_large_frame_is_scaled_and_banded_in_the_verdict_colour() {
        let frame = Mat::new_rows_cols_with_default(1080, 1920, CV_8UC3, Scalar::all(0.0)).unwrap();
        let out = decode(&jpeg(&shot(Verdict::Ng, Some(frame), vec![])).unwrap());
        assert_eq!((out.cols(), out.rows()), (MAX_WIDTH, 540 + BAND));
        let px = out.at_2d::<opencv::core::Vec3b>(2, MAX_WIDTH - 3).unwrap();
        assert!(px[2] > 150 && px[1] < 100, "the NG band is red: {px:?}");
    }

    #[test]
    fn boxes_and_masks_are_drawn_where_the_model_saw_them() {
        let frame = Mat::new_rows_cols_with_default(100, 200, CV_8UC1, Scalar::all(0.0)).unwrap();
        let mut mask = vec![false; 100 * 200];
        for y in 60..80 {
            for x in 150..180 {
                mask[y * 200 + x] = true;
            }
        }
        let dets = vec![
            Detection {
                class: "hole".into(),
                class_id: 1,
                score: 0.8,
                bbox: [20.0, 30.0, 60.0, 70.0],
                mask_area: None,
                mask: None,
            },
            Detection {
                class: "scratch".into(),
                class_id: 2,
                score: 0.7,
                bbox: [150.0, 60.0, 180.0, 80.0],
                mask_area: Some(600),
                mask: Some(Arc::new(mask)),
            },
        ];
        let out = decode(&jpeg(&shot(Verdict::Ng, Some(frame), dets)).unwrap());
        assert_eq!((out.cols(), out.rows()), (MIN_WIDTH, 256 + BAND), "a small frame is drawn larger");
        let scale = f64::from(MIN_WIDTH) / 200.0;
        let at = |x: i32, y: i32| {
            let (x, y) = ((f64::from(x) * scale) as i32, (f64::from(y) * scale) as i32);
            out.at_2d::<opencv::core::Vec3b>(y + BAND, x).unwrap().0
        };
        assert!(at(20, 50)[2] > 150, "the box's left edge is red: {:?}", at(20, 50));
        assert!(at(40, 50)[2] < 60, "inside the box the frame shows: {:?}", at(40, 50));
        assert!(at(165, 70)[2] > 80 && at(165, 70)[0] < 60, "the mask is tinted: {:?}", at(165, 70));
        assert!(at(100, 90)[2] < 60, "outside every mask: {:?}", at(100, 90));
    }

    #[test]
    fn an_anomaly_map_is_drawn_hot_where_it_is_high_and_not_where_it_is_low() {
        let frame = Mat::new_rows_cols_with_default(256, 256, CV_8UC3, Scalar::all(128.0)).unwrap();
        // A 64x64 map, cold (0.1) but for a hot square (0.95) in rows and columns 40..56.
        let mut values = vec![0.1f32; 64 * 64];
        for y in 40..56 {
            for x in 40..56 {
                values[y * 64 + x] = 0.95;
            }
        }
        let mut s = shot(Verdict::Ng, Some(frame), vec![]);
        s.heat = Some(crate::part::HeatMap { height: 64, width: 64, values: values.into() });
        let out = decode(&jpeg(&s).unwrap());
        let scale = f64::from(MIN_WIDTH) / 256.0;
        let at = |x: i32, y: i32| {
            let (x, y) = ((f64::from(x) * scale) as i32, (f64::from(y) * scale) as i32);
            out.at_2d::<opencv::core::Vec3b>(y + BAND, x).unwrap().0
        };
        // Map cell 48 is frame pixel 192; cell 10 is pixel 40.
        let hot = at(192, 192);
        assert!(hot[2] > 150 && hot[0] < 90, "the hot square is red over grey: {hot:?}");
        let cold = at(40, 40);
        assert!(cold.iter().all(|c| (118..=138).contains(c)), "below half the threshold the frame shows: {cold:?}");
    }

    #[test]
    fn a_part_without_a_frame_shows_why() {
        let out = decode(&jpeg(&shot(Verdict::Error, None, vec![])).unwrap());
        assert_eq!(out.cols(), 480);
    }
}
