#![no_main]
// The body is linesight_fuzz::pyliteral (fuzz/src/lib.rs), shared with tests/it/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linesight_fuzz::pyliteral(data));
