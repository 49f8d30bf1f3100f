//! A config file as a user writes it: control's YAML reader
//! (`yaml::parse`, with its depth and node limits) and the kind decoding
//! and validation on top (`source::parse::all_errors`, which runs
//! `parse_outcomes` and then every value rule of every document).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use weft_control::{
    source::parse,
    yaml::{self, Limits},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.yaml");
    // Tight limits too: the limit checks themselves are under test.
    let _ = yaml::parse(
        text,
        Limits {
            max_depth: 8,
            max_nodes: 256,
        },
    );
    let errors = parse::all_errors(file, text);
    // Every error names the file.
    for error in &errors {
        assert_eq!(error.file, file, "{error:?}");
    }
});
