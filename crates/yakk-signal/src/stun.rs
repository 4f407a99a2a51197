//! A minimal STUN responder (RFC 8489 Binding only), so that `yakk signal --stun-listen ADDR`
//! alone tells peers their public address: no separate STUN server needed for server-reflexive
//! candidates.
//!
//! It answers a well-formed Binding request with a Binding success response carrying
//! XOR-MAPPED-ADDRESS (the request's source address) and FINGERPRINT, and ignores everything
//! else (no error responses: nothing to gain by answering garbage). A response is never larger
//! than 60 bytes, and requests under 20 bytes are not answered, so the amplification a spoofed
//! source can get is small.

use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

const MAGIC_COOKIE: u32 = 0x2112_A442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554E;
const HEADER: usize = 20;

/// The response to `req` received from `from`, if `req` is a STUN Binding request.
pub fn binding_response(req: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    if req.len() < HEADER {
        return None;
    }
    let msg_type = u16::from_be_bytes([req[0], req[1]]);
    let len = usize::from(u16::from_be_bytes([req[2], req[3]]));
    let cookie = u32::from_be_bytes([req[4], req[5], req[6], req[7]]);
    if msg_type != BINDING_REQUEST
        || cookie != MAGIC_COOKIE
        || len % 4 != 0
        || HEADER + len != req.len()
    {
        return None;
    }
    let txid = &req[8..HEADER];
    let mut attr = Vec::with_capacity(20);
    let xport = from.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match from.ip() {
        IpAddr::V4(v4) => {
            attr.extend_from_slice(&[0, 1]);
            attr.extend_from_slice(&xport.to_be_bytes());
            let x = u32::from(v4) ^ MAGIC_COOKIE;
            attr.extend_from_slice(&x.to_be_bytes());
        }
        IpAddr::V6(v6) => {
            attr.extend_from_slice(&[0, 2]);
            attr.extend_from_slice(&xport.to_be_bytes());
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(txid);
            for (o, k) in v6.octets().iter().zip(key) {
                attr.push(o ^ k);
            }
        }
    }
    let mut out = Vec::with_capacity(HEADER + 4 + attr.len() + 8);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    // The length counts the FINGERPRINT too (it is computed over a header that says so).
    let body_len = (4 + attr.len() + 8) as u16;
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
    out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    out.extend_from_slice(&attr);
    let crc = crc32(&out) ^ FINGERPRINT_XOR;
    out.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    Some(out)
}

/// CRC-32 (IEEE 802.3, reflected, as FINGERPRINT uses).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
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

    fn request(txid: [u8; 12]) -> Vec<u8> {
        let mut r = vec![0x00, 0x01, 0x00, 0x00];
        r.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        r.extend_from_slice(&txid);
        r
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
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
        assert_eq!(&resp[8..20], &txid);
        // RFC 5769 §2.2's example maps 192.0.2.1:32853 to these bytes.
        assert_eq!(&resp[20..24], &[0x00, 0x20, 0x00, 0x08]);
        assert_eq!(
            &resp[24..32],
            &[0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]
        );
        let n = resp.len();
        let crc = u32::from_be_bytes([resp[n - 4], resp[n - 3], resp[n - 2], resp[n - 1]]);
        assert_eq!(crc, crc32(&resp[..n - 8]) ^ FINGERPRINT_XOR);
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
            &resp[24..44],
            &[
                0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25,
                0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9
            ]
        );
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
        r[4] = 0; // no magic cookie (RFC 3489)
        assert!(binding_response(&r, from).is_none());
        let mut r = request([1; 12]);
        r[3] = 4; // length beyond the datagram
        assert!(binding_response(&r, from).is_none());
        // With an attribute, properly sized: answered.
        let mut r = request([1; 12]);
        r[3] = 8;
        r.extend_from_slice(&[0x80, 0x22, 0x00, 0x04, b't', b'e', b's', b't']);
        assert!(binding_response(&r, from).is_some());
    }
}
