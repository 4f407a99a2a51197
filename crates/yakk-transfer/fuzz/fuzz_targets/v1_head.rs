//! The yakk/1 HTTP heads on a peer's arbitrary bytes: the request a server reads, the response
//! a fetcher reads, and the `Range`, `Content-Disposition` and chunk-size fields. No panic; what
//! is accepted is what yakk promises (a range inside the file, a name that is one safe
//! component and not a partial file's); a name survives `disposition` → `parse_filename`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yakk_transfer::v1_head::{
    chunk_size, disposition, parse_filename, parse_range, parse_request, parse_response,
};
use yakk_transfer::names;

fuzz_target!(|data: &[u8]| {
    let Some((&which, p)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Err(bad) = parse_request(p) {
                assert!(!bad.what.chars().any(char::is_control), "{:?}", bad.what);
            }
        }
        1 => {
            if let Ok(r) = parse_response(p) {
                assert!(names::check_component(&r.name).is_ok(), "{:?}", r.name);
                assert!(!r.name.starts_with(".yakk-") || !r.name.ends_with(".part"));
            }
        }
        2 => {
            // Eight bytes of file size, then the header value.
            if p.len() >= 8 {
                let size = u64::from_le_bytes(p[..8].try_into().unwrap());
                if let Ok(v) = std::str::from_utf8(&p[8..])
                    && let Some(Ok((a, b))) = parse_range(v, size)
                {
                    assert!(a <= b && b < size, "{v:?} on {size}: {a}-{b}");
                }
            }
        }
        3 => {
            if let Ok(line) = std::str::from_utf8(p) {
                let _ = chunk_size(line);
                let _ = parse_filename(line);
            }
        }
        _ => {
            // A name a sender may serve: one safe component. It must come back unchanged.
            if let Ok(name) = std::str::from_utf8(p)
                && names::check_component(name).is_ok()
            {
                let d = disposition(name);
                assert_eq!(parse_filename(&d).as_deref(), Some(name), "{d:?}");
            }
        }
    }
});
