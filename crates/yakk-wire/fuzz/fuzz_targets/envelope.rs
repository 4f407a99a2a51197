//! The signalling envelope, as the server and every peer parse it from a WebSocket frame: no
//! panic on any bytes, the size bound holds, and what parses survives its own round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yakk_wire::{Envelope, WireError};

const MAX: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    match Envelope::parse(data, MAX) {
        Ok(e) => {
            assert!(data.len() <= MAX);
            let again =
                Envelope::parse(e.to_json().as_bytes(), usize::MAX).expect("what we print parses");
            assert_eq!(again.to_json(), e.to_json());
        }
        Err(WireError::TooLarge(n, max)) => assert!(n > max && max == MAX),
        Err(WireError::Malformed(_)) => {}
    }
});
