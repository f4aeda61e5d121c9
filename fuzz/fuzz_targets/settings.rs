//! The settings loader on arbitrary text: `config::parse` answers every input with settings or
//! with at least one error, each error's line (when given) points into the file, and nothing
//! panics.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = fpush::config::parse(text, &fpush::modules::platforms()) {
        assert!(!errors.errors.is_empty(), "parse failed without saying why");
        let lines = text.split('\n').count();
        for error in &errors.errors {
            if let Some(line) = error.line {
                assert!(
                    (1..=lines).contains(&line),
                    "line {line} of a {lines}-line file: {error}"
                );
            }
        }
        // What the operator reads must render without panicking too.
        let _ = errors.to_string();
    }
});
