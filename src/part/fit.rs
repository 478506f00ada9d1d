//! How much of a frame's resolution a model uses, so that a camera can decode its JPEG frames at
//! a reduced size (libjpeg's DCT scaling: 1/2, 1/4 or 1/8 of the pixels per side, at a fraction
//! of the CPU) without giving the model fewer pixels than it resizes the frame to.
//!
//! Inference says what its model needs ([`Fit`]); the camera, which knows its frames' size, its
//! rotation and crop, picks the reduction ([`Fit::largest_reduction`]). Neither imports the other.

/// What a model does with a frame before its tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Resized to exactly `width x height` whatever its shape (classifiers, anomaly models).
    Stretch { width: u32, height: u32 },
    /// Scaled to fit `width x height` keeping its shape, then padded (YOLO detectors and segmenters).
    Letterbox { width: u32, height: u32 },
    /// Shorter side scaled to `side`, then the centre cut (Ultralytics' classifiers).
    ShortSide { side: u32 },
}

/// The reductions libjpeg decodes at directly, largest first.
pub const REDUCTIONS: [u32; 3] = [8, 4, 2];

impl Fit {
    /// The largest of 8, 4, 2 (or 1: none) by which a `width x height` frame, as the model sees
    /// it (rotated and cropped), can shrink per side and still be at least as large as what the
    /// model resizes it to, in both dimensions. A frame smaller than the model is never reduced.
    pub fn largest_reduction(&self, width: u32, height: u32) -> u32 {
        if width == 0 || height == 0 {
            return 1;
        }
        // The size the model scales this frame to.
        let (need_w, need_h) = match *self {
            Fit::Stretch { width: w, height: h } => (f64::from(w), f64::from(h)),
            Fit::Letterbox { width: w, height: h } => {
                let r = (f64::from(w) / f64::from(width)).min(f64::from(h) / f64::from(height));
                (f64::from(width) * r, f64::from(height) * r)
            }
            Fit::ShortSide { side } => {
                let r = f64::from(side) / f64::from(width.min(height));
                (f64::from(width) * r, f64::from(height) * r)
            }
        };
        REDUCTIONS
            .into_iter()
            // libjpeg rounds a reduced side up.
            .find(|&k| {
                f64::from(width.div_ceil(k)) >= need_w.floor() && f64::from(height.div_ceil(k)) >= need_h.floor()
            })
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_model_on_a_large_frame_takes_the_largest_reduction_that_covers_it() {
        // 1080p to 128x128: 240x135 still covers it, 1/8.
        assert_eq!(Fit::Stretch { width: 128, height: 128 }.largest_reduction(1920, 1080), 8);
        // 256x256: 1/8 gives 240x135, too small; 1/4 gives 480x270.
        assert_eq!(Fit::Stretch { width: 256, height: 256 }.largest_reduction(1920, 1080), 4);
        // A frame barely larger than the model: not reduced.
        assert_eq!(Fit::Stretch { width: 256, height: 256 }.largest_reduction(300, 300), 1);
        assert_eq!(Fit::Stretch { width: 256, height: 256 }.largest_reduction(0, 300), 1);
    }

    #[test]
    fn letterbox_and_short_side_need_only_the_scaled_content() {
        // YOLO 640: a 1920x1080 frame is scaled by 1/3 to 640x360; 1/2 (960x540) covers it, 1/4
        // (480x270) does not.
        assert_eq!(Fit::Letterbox { width: 640, height: 640 }.largest_reduction(1920, 1080), 2);
        // 4K to 640: 1/6 needed, 1/4 is the largest that covers it.
        assert_eq!(Fit::Letterbox { width: 640, height: 640 }.largest_reduction(3840, 2160), 4);
        // Ultralytics' classifier at 224 on 1080p: short side 1080 -> 224; 1/4 gives 270.
        assert_eq!(Fit::ShortSide { side: 224 }.largest_reduction(1920, 1080), 4);
    }
}
