//! Fuzzes the Dockerfile parser (see `rbuild::parser::selfcheck::check_parse`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbuild::parser::selfcheck::check_parse(data));
