//! What anyone who reaches the rendezvous's TURN and STUN ports sends, as the server reads it:
//! the frames of TURN over TCP or TLS (a STUN message or a ChannelData, RFC 8656 §12.5,
//! RFC 6062), and a datagram to the STUN responder.
//!
//! No panic. Frames: each is read from where the previous one ended, within the bounds
//! (`MAX_STUN`, `MAX_CHANNEL_DATA`), a STUN message with its magic cookie, a ChannelData on a
//! channel number RFC 8656 allows, its length as its header says and its padding skipped.
//! STUN responder: only a datagram of at least a header is answered, with at most 52 bytes
//! (the amplification bound), as a Binding success response to the request's transaction that
//! carries the sender's address.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use bytecodec::DecodeExt as _;
use libfuzzer_sys::fuzz_target;
use stun_codec::rfc5389::Attribute;
use stun_codec::rfc5389::attributes::XorMappedAddress;
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::{MessageClass, MessageDecoder};
use yakk_signal::stun::binding_response;
use yakk_signal::turn::framing::fuzz::{Frame, MAX_CHANNEL_DATA, MAX_STUN, read_frames};

const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

fuzz_target!(|data: &[u8]| {
    let (frames, _malformed) = read_frames(data);
    let mut at = 0;
    for (took, frame) in frames {
        let here = &data[at..];
        match frame {
            Frame::Stun => {
                assert!((20..=MAX_STUN).contains(&took) && took % 4 == 0, "{took}");
                assert_eq!(here[0] >> 6, 0);
                assert_eq!(here[4..8], COOKIE);
                assert_eq!(
                    usize::from(u16::from_be_bytes([here[2], here[3]])) + 20,
                    took
                );
            }
            Frame::ChannelData(raw) => {
                assert!((4..=MAX_CHANNEL_DATA).contains(&raw.len()));
                let number = u16::from_be_bytes([raw[0], raw[1]]);
                assert!((0x4000..=0x4fff).contains(&number), "{number:#x}");
                let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
                assert_eq!(raw.len(), 4 + len);
                assert_eq!(took, raw.len().next_multiple_of(4));
                assert_eq!(raw[..], here[..raw.len()]);
            }
        }
        at += took;
    }
    assert!(at <= data.len());

    // The responder, from an IPv4 and an IPv6 sender.
    let v4 = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 32853));
    let v6 = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 443));
    for from in [v4, v6] {
        let Some(resp) = binding_response(data, from) else {
            continue;
        };
        assert!(data.len() >= 20);
        assert!(
            resp.len() <= 52,
            "{} bytes answer {}",
            resp.len(),
            data.len()
        );
        let msg = MessageDecoder::<Attribute>::new()
            .decode_from_bytes(&resp)
            .expect("a response decodes")
            .expect("its attributes decode");
        assert_eq!(msg.class(), MessageClass::SuccessResponse);
        assert_eq!(msg.method(), BINDING);
        assert_eq!(msg.transaction_id().as_bytes()[..], data[8..20]);
        let mapped = msg
            .get_attribute::<XorMappedAddress>()
            .expect("XOR-MAPPED-ADDRESS");
        assert_eq!(mapped.address(), from);
    }
});
