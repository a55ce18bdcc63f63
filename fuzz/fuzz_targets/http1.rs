#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_proxy::fuzzing::http1(data));
