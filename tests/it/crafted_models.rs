//! Crafted model files (tools/make_crafted_models.py, in models/test/): output shapes no real
//! export has, behind the metadata of a real adapter. Each must be refused at load with an error
//! naming the file and the shape expected; none may panic (at load or at inference).

use crate::common::*;

/// Load `models/test/<name>`; if it loads, run it on a sample image (which must not panic
/// either), then fail: a crafted file must be refused at load.
fn refused(name: &str) -> String {
    require_ort();
    let path = repo().join("models/test").join(name);
    match linesight::cli::infer::load(&path, 1) {
        Err(e) => {
            assert!(e.contains(&path.display().to_string()), "the error names the file: {e}");
            e
        }
        Ok(mut model) => {
            let frame = linesight::cli::infer::read_image(
                &repo().join("models/surface-segmenter-samples/letterbox_00000_384x288.png"),
            )
            .unwrap();
            let ran = model.infer(&[&frame], 0.25, 0.7).map(|_| ());
            panic!("{name} loaded (inference then gave {ran:?}); it must be refused at load");
        }
    }
}

#[test]
fn a_segment_nms_export_without_mask_coefficients_is_refused_at_load() {
    // task segment + end2end with a [1, 2, 6] output: it used to load, then index past the
    // output's 12 values for the mask coefficients.
    let e = refused("segment-nms-k2.onnx");
    assert!(e.contains("nms=True"), "{e}");
    assert!(e.contains("[N, 37, A]") && e.contains("[N, 32, H/4, W/4]"), "the error gives the shapes expected: {e}");
}

#[test]
fn an_anomaly_map_that_is_not_an_image_is_refused_at_load() {
    // anomaly_map [1]: it used to load, then read the map's size at shape[len - 2].
    let e = refused("anomaly-flat-map.onnx");
    assert!(e.contains("anomaly_map") && e.contains("[N, 1, h, w]"), "{e}");
}
