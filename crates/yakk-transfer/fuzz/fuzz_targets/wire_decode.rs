//! The transfer protocol's payload decoders on a peer's arbitrary bytes: no panic, no unbounded
//! allocation, and what decodes encodes back to the same bytes (one encoding per value, so two
//! readers cannot disagree on what a frame says).
#![no_main]

use libfuzzer_sys::fuzz_target;
use yakk_transfer::wire;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the decoder, the rest is its payload.
    let Some((&which, p)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(offer) = wire::decode_offer(p) {
                assert_eq!(
                    wire::encode_offer(&offer),
                    p,
                    "an offer re-encodes to itself"
                );
                // An accept checked against this offer: the offsets within each entry.
                if let Ok(offsets) = wire::decode_accept(p, &offer) {
                    assert_eq!(offsets.len(), offer.entries.len());
                }
            }
        }
        1 => {
            if let Ok((size, hash)) = wire::decode_stream_end(p) {
                assert_eq!(wire::encode_stream_end(size, &hash), p);
            }
        }
        2 => {
            if let Ok(v) = wire::decode_hello(p) {
                assert_eq!(v, wire::VERSION);
            }
        }
        3 => {
            // REFUSE and ERROR texts reach the terminal: escaped, never a control character.
            let t = wire::decode_text(p);
            assert!(!t.chars().any(|c| c.is_control()), "{t:?}");
        }
        _ => {
            // An accept against the offer that precedes it in the input: `[len][offer][accept]`.
            if p.len() < 2 {
                return;
            }
            let n = usize::from(u16::from_be_bytes([p[0], p[1]])).min(p.len() - 2);
            let (offer, accept) = p[2..].split_at(n);
            if let Ok(offer) = wire::decode_offer(offer)
                && let Ok(offsets) = wire::decode_accept(accept, &offer)
            {
                assert_eq!(wire::encode_accept(&offsets), accept);
            }
        }
    }
});
