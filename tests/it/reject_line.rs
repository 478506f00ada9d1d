//! The reject gate on a line run by an independent PLC: `tools/plc_line.py` (pymodbus, its own
//! process) moves an encoder, pulses a photo-eye and latches the encoder count at each edge;
//! linesight's pollers, encoder, trigger (with `latch`) and gate run against it, as in
//! `linesight bench --rejects`. Odd parts are NG. No timing is asserted: every NG part gets
//! exactly one pulse, no good part gets one, and each part's position is the PLC's latched count.

use linesight::cli::bench::rejects::{run_line, LineBench};
use std::time::Duration;

fn bench(latch: bool) -> LineBench {
    LineBench {
        parts: 30,
        rates: vec![10.0], // the photo-eye on for 40 ms: slack for a loaded CI machine
        runs: 1,
        latch: vec![latch],
        poll: Duration::from_millis(2),
        distance: 20_000,
        speed: 100_000,
        max_rate: false,
        json: true,
        odd_ng: true,
        eye_on: None,
    }
}

fn run_of(out: &serde_json::Value) -> &serde_json::Value {
    &out["figures"][0]["runs"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ng_part_gets_one_pulse_at_its_latched_position() {
    let out = run_line(bench(true)).await.expect("the line bench runs");
    let r = run_of(&out);
    assert_eq!(r["triggers_seen"], 30, "every photo-eye edge is a part: {r}");
    assert_eq!(r["ng_parts"], 15, "{r}");
    assert_eq!((r["missed"].as_u64(), r["duplicates"].as_u64()), (Some(0), Some(0)), "one pulse per NG part: {r}");
    assert_eq!(r["wrong_part"], 0, "no pulse for a good part, none astray: {r}");
    assert_eq!(r["positions_exact"], 30, "each part is placed at the PLC's latched count: {r}");
    assert_eq!(r["failed_writes"], 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_latch_each_ng_part_still_gets_one_pulse() {
    let out = run_line(bench(false)).await.expect("the line bench runs");
    let r = run_of(&out);
    assert_eq!(r["triggers_seen"], 30, "{r}");
    assert_eq!((r["missed"].as_u64(), r["duplicates"].as_u64()), (Some(0), Some(0)), "{r}");
    assert_eq!(r["wrong_part"], 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_eye_pulse_between_two_polls_is_still_a_part_by_its_latch() {
    // The eye on for 0.3 ms, read every 2 ms: most pulses are never seen on the discrete input;
    // the PLC latched each one, and that is the part.
    let out = run_line(LineBench { eye_on: Some(Duration::from_micros(300)), ..bench(true) })
        .await
        .expect("the line bench runs");
    let r = run_of(&out);
    assert_eq!(r["triggers_seen"], 30, "every latched edge is a part: {r}");
    assert!(r["triggers_from_latch"].as_u64() > Some(10), "most parts came from the latch alone: {r}");
    assert_eq!((r["missed"].as_u64(), r["duplicates"].as_u64()), (Some(0), Some(0)), "one pulse per NG part: {r}");
    assert_eq!(r["wrong_part"], 0, "{r}");
    assert_eq!(r["positions_exact"], 30, "{r}");
}
