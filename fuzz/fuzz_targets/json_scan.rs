#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_proxy::fuzzing::json_scan(data));
