//! yakk/1 envelope payloads (base64 of JSON): every decoder must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yakk_pake::v1::{KeyConfirm, Round1, Round2};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r1) = Round1::from_payload(text) {
        let _ = r1.verify_proofs();
    }
    let _ = Round2::from_payload(text);
    let _ = KeyConfirm::from_payload(text);
});
