//! Fuzzes the shell expander (see `rbuild::parser::selfcheck::check_expand`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbuild::parser::selfcheck::check_expand(data));
