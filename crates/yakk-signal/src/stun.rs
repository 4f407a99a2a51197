//! A minimal STUN responder (RFC 8489 Binding only), so that `yakk signal --stun-listen ADDR`
//! alone tells peers their public address: no separate STUN server needed for server-reflexive
//! candidates. Messages are read and written with `stun_codec`.
//!
//! It answers a well-formed Binding request with a Binding success response carrying
//! XOR-MAPPED-ADDRESS (the request's source address) and FINGERPRINT, and ignores everything
//! else (no error responses: nothing to gain by answering garbage). A response is never larger
//! than 52 bytes, and requests under 20 bytes are not answered, so the amplification a spoofed
//! source can get is small.

use std::net::SocketAddr;

use bytecodec::{DecodeExt as _, EncodeExt as _};
use stun_codec::rfc5389::Attribute;
use stun_codec::rfc5389::attributes::{Fingerprint, XorMappedAddress};
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder};
use tokio::net::UdpSocket;

/// The response to `req` received from `from`, if `req` is a STUN Binding request.
pub fn binding_response(req: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    // A message whose attributes do not decode (a FINGERPRINT that does not match, say) comes
    // out as `Ok(Err(broken))`: not answered either.
    let request = MessageDecoder::<Attribute>::new()
        .decode_from_bytes(req)
        .ok()?
        .ok()?;
    if request.class() != MessageClass::Request || request.method() != BINDING {
        return None;
    }
    let mut response = Message::<Attribute>::new(
        MessageClass::SuccessResponse,
        BINDING,
        request.transaction_id(),
    );
    response.add_attribute(XorMappedAddress::new(from));
    let fingerprint = Fingerprint::new(&response).ok()?;
    response.add_attribute(fingerprint);
    MessageEncoder::new().encode_into_bytes(response).ok()
}

/// Answers Binding requests on `socket` until the task is dropped.
pub async fn serve(socket: UdpSocket) {
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems: keep serving.
                tracing::debug!("stun: receive error: {e}");
                continue;
            }
        };
        if let Some(resp) = binding_response(&buf[..n], from)
            && let Err(e) = socket.send_to(&resp, from).await
        {
            tracing::debug!("stun: cannot answer {from}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The magic cookie, bytes 4 to 8 of every STUN message (RFC 8489).
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

    fn request(txid: [u8; 12]) -> Vec<u8> {
        let mut r = vec![0x00, 0x01, 0x00, 0x00];
        r.extend_from_slice(&COOKIE);
        r.extend_from_slice(&txid);
        r
    }

    /// FINGERPRINT's value over `bytes` (RFC 8489 §14.7: CRC-32 XOR 0x5354554e), computed here
    /// with the `crc` crate rather than taken from the codec under test.
    fn fingerprint(bytes: &[u8]) -> u32 {
        crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(bytes) ^ 0x5354_554e
    }

    #[test]
    fn answers_binding_with_the_xor_mapped_source() {
        let txid = [7u8; 12];
        let from: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let resp = binding_response(&request(txid), from).unwrap();
        assert_eq!(&resp[0..2], &[0x01, 0x01]);
        assert_eq!(
            usize::from(u16::from_be_bytes([resp[2], resp[3]])),
            resp.len() - 20
        );
        assert_eq!(&resp[4..8], &COOKIE);
        assert_eq!(&resp[8..20], &txid);
        // RFC 5769 §2.2's example maps 192.0.2.1:32853 to these bytes.
        assert_eq!(&resp[20..24], &[0x00, 0x20, 0x00, 0x08]);
        assert_eq!(
            &resp[24..32],
            &[0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]
        );
        // FINGERPRINT last, over everything before it.
        let n = resp.len();
        assert_eq!(n, 40);
        assert_eq!(&resp[n - 8..n - 4], &[0x80, 0x28, 0x00, 0x04]);
        let crc = u32::from_be_bytes([resp[n - 4], resp[n - 3], resp[n - 2], resp[n - 1]]);
        assert_eq!(crc, fingerprint(&resp[..n - 8]));
    }

    #[test]
    fn answers_ipv6() {
        let txid = [
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ];
        let from: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        let resp = binding_response(&request(txid), from).unwrap();
        // RFC 5769 §2.3's XOR-MAPPED-ADDRESS value.
        assert_eq!(
            &resp[20..44],
            &[
                0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3,
                0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9
            ]
        );
        let n = resp.len();
        assert_eq!(n, 52, "the largest response");
        let crc = u32::from_be_bytes([resp[n - 4], resp[n - 3], resp[n - 2], resp[n - 1]]);
        assert_eq!(crc, fingerprint(&resp[..n - 8]));
    }

    #[test]
    fn ignores_what_is_not_a_binding_request() {
        let from: SocketAddr = "192.0.2.1:1".parse().unwrap();
        assert!(binding_response(b"", from).is_none());
        assert!(binding_response(&[0u8; 19], from).is_none());
        let mut r = request([1; 12]);
        r[1] = 0x03; // Allocate
        assert!(binding_response(&r, from).is_none());
        let mut r = request([1; 12]);
        r[0] = 0x01; // a Binding success response, not a request
        assert!(binding_response(&r, from).is_none());
        let mut r = request([1; 12]);
        r[4] = 0; // no magic cookie (RFC 3489)
        assert!(binding_response(&r, from).is_none());
        let mut r = request([1; 12]);
        r[3] = 4; // length beyond the datagram
        assert!(binding_response(&r, from).is_none());
        let mut r = request([1; 12]);
        r.push(0); // a byte beyond the length
        assert!(binding_response(&r, from).is_none());
        // With an attribute, properly sized: answered.
        let mut r = request([1; 12]);
        r[3] = 8;
        r.extend_from_slice(&[0x80, 0x22, 0x00, 0x04, b't', b'e', b's', b't']);
        assert!(binding_response(&r, from).is_some());
        // With a FINGERPRINT: answered when it matches, ignored when it does not.
        let mut r = request([2; 12]);
        r[3] = 8;
        let crc = fingerprint(&r);
        r.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
        r.extend_from_slice(&crc.to_be_bytes());
        assert!(binding_response(&r, from).is_some());
        let last = r.len() - 1;
        r[last] ^= 1;
        assert!(binding_response(&r, from).is_none());
    }
}
