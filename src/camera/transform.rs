//! Rotation and crop, applied to every frame in the capture thread before
//! anything else sees it: a camera mounted on its side, or a wide view of
//! which only the conveyor matters, gives the model the same upright, tight
//! picture it was trained on.
//!
//! Rotation comes first and the crop is given in the rotated image's pixels:
//! that is the picture the engineer looks at when drawing the crop.

use opencv::core::{Mat, Rect};
use opencv::prelude::*;

use crate::config::{CameraConfig, Rotation};

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Transform {
    pub rotate: Rotation,
    /// `[x, y, width, height]` in the rotated image.
    pub crop: Option<[u32; 4]>,
}

impl Transform {
    pub fn of(config: &CameraConfig) -> Self {
        Transform { rotate: config.rotate, crop: config.crop }
    }

    /// The same for a frame decoded at 1/`k` per side: the crop, drawn on the full frame, shrinks
    /// with it (rounded down to whole pixels).
    pub fn reduced(self, k: u32) -> Self {
        let k = k.max(1);
        Transform { crop: self.crop.map(|c| c.map(|v| v / k)), ..self }
    }

    /// The `(width, height)` a `width x height` frame has after this transform (no check that
    /// the crop fits: [`Transform::apply`] does that on the frame).
    pub fn size_of(&self, width: u32, height: u32) -> (u32, u32) {
        if let Some([_, _, w, h]) = self.crop {
            return (w, h);
        }
        match self.rotate {
            Rotation::R90 | Rotation::R270 => (height, width),
            _ => (width, height),
        }
    }

    pub fn is_identity(&self) -> bool {
        self.rotate == Rotation::R0 && self.crop.is_none()
    }

    /// The frame turned and cut as configured. A crop that does not fit the
    /// frame is an error naming both sizes: the camera delivers another
    /// resolution than the crop was drawn on.
    pub fn apply(&self, frame: Mat) -> Result<Mat, String> {
        let turned = match self.rotate.opencv_code() {
            None => frame,
            Some(code) => {
                let mut out = Mat::default();
                opencv::core::rotate(&frame, &mut out, code).map_err(|e| e.message.clone())?;
                out
            }
        };
        let Some([x, y, w, h]) = self.crop else { return Ok(turned) };
        let (fw, fh) = (turned.cols() as u64, turned.rows() as u64);
        if u64::from(x) + u64::from(w) > fw || u64::from(y) + u64::from(h) > fh || w == 0 || h == 0 {
            return Err(format!(
                "crop [{x}, {y}, {w}, {h}] does not fit the {fw}x{fh} frame{}; fix `crop` (x, y, width, height in the rotated image) or the camera's resolution",
                if self.rotate == Rotation::R0 { String::new() } else { format!(" (after rotating by {})", self.rotate.degrees()) }
            ));
        }
        let roi = Rect::new(x as i32, y as i32, w as i32, h as i32);
        // A copy, so the frame is continuous memory and the full image is freed.
        Mat::roi(&turned, roi).and_then(|m| m.try_clone()).map_err(|e| e.message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Scalar, Vec3b, CV_8UC3};

    /// A 4x2 (w x h) frame whose pixel (x, y) holds (x, y, 7).
    fn frame() -> Mat {
        let mut m = Mat::new_rows_cols_with_default(2, 4, CV_8UC3, Scalar::all(0.0)).unwrap();
        for y in 0..2 {
            for x in 0..4 {
                *m.at_2d_mut::<Vec3b>(y, x).unwrap() = Vec3b::from([x as u8, y as u8, 7]);
            }
        }
        m
    }

    fn px(m: &Mat, x: i32, y: i32) -> (u8, u8) {
        let v = m.at_2d::<Vec3b>(y, x).unwrap();
        (v[0], v[1])
    }

    #[test]
    fn rotation_is_clockwise_and_the_crop_is_in_the_rotated_image() {
        let t = Transform { rotate: Rotation::R90, crop: None };
        let r = t.apply(frame()).unwrap();
        assert_eq!((r.cols(), r.rows()), (2, 4));
        // Clockwise: the bottom-left source pixel (0, 1) becomes the top-left one.
        assert_eq!(px(&r, 0, 0), (0, 1));
        assert_eq!(px(&r, 1, 3), (3, 0));
        let t = Transform { rotate: Rotation::R180, crop: Some([1, 0, 2, 1]) };
        let c = t.apply(frame()).unwrap();
        assert_eq!((c.cols(), c.rows()), (2, 1));
        assert_eq!((px(&c, 0, 0), px(&c, 1, 0)), ((2, 1), (1, 1)));
        assert!(c.is_continuous());
        assert_eq!(Transform { rotate: Rotation::R270, crop: None }.apply(frame()).map(|m| px(&m, 0, 0)), Ok((3, 0)));
    }

    #[test]
    fn a_crop_outside_the_frame_says_which_sizes_disagree() {
        let e = Transform { rotate: Rotation::R90, crop: Some([0, 0, 3, 2]) }.apply(frame()).unwrap_err();
        assert!(e.contains("[0, 0, 3, 2] does not fit the 2x4 frame (after rotating by 90)"), "{e}");
        assert!(Transform { rotate: Rotation::R0, crop: Some([0, 0, 0, 1]) }.apply(frame()).is_err());
        assert!(Transform::default().is_identity());
    }
}
