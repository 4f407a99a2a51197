//! yakk/2 envelope payloads (base64 of the binary messages): decoders must return,
//! never panic, and whatever decodes must re-encode to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yakk_pake::v2::{KeyConfirm, Round1, Round2};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Round1::from_payload(text) {
        assert_eq!(m.to_payload(), text);
    }
    if let Ok(m) = Round2::from_payload(text) {
        assert_eq!(m.to_payload(), text);
    }
    if let Ok(m) = KeyConfirm::from_payload(text) {
        assert_eq!(m.to_payload(), text);
    }
});
