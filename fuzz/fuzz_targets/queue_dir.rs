#![no_main]
// The body is linesight_fuzz::queue_dir (fuzz/src/lib.rs), shared with tests/it/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linesight_fuzz::queue_dir(data));
