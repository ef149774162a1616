//! Bodies of the sleeve's fuzz targets, as plain functions so the unit
//! tests can run them on stable (cargo-fuzz drives the same functions from
//! `router/fuzz/`). Each must never panic on any input; the assertions
//! inside check properties that must hold for every input.

use std::net::SocketAddr;
use std::time::Instant;

use super::checksum::{PartialHint, complete_checksum, recompute_l4};
use super::connection::{SleeveConnection, SleeveParams};
use super::crypto::{Opener, ReplayWindow, StreamSealer};
use super::ethernet::{decode, fragment, icmp_frag_needed};
use super::frame::{NameBytes, frames, split_sender};
use super::offload::{Coalescer, VNET_HDR_LEN, segment_tcp};
use super::overlay_switch::unwrap_control;
use crate::mesh::crypto::SessionKey;

const KEY: SessionKey = SessionKey([0x42; 32]);
const LOCAL: NameBytes = [0, 0, 0, 0, 0, 1];
const REMOTE: NameBytes = [0, 0, 0, 0, 0, 2];

fn connection(key: Option<SessionKey>) -> SleeveConnection {
    SleeveConnection::new(SleeveParams {
        local: LOCAL,
        remote: REMOTE,
        outbound: false,
        conn_uid: 7,
        session_key: key,
        remote_addr: None,
    })
}

/// Decodes `data` as a plaintext sleeve datagram: the frame list, each
/// frame's headers, and a connection's receive path.
pub fn fuzz_decode_frames(data: &[u8]) {
    if let Ok((_, body)) = split_sender(data) {
        let mut total = 0usize;
        for record in frames(body) {
            match record {
                Ok(r) => {
                    total += 14 + r.frame.len();
                    if let Some(d) = decode(r.frame) {
                        let _ = d.is_special();
                        let _ = d.dont_fragment();
                    }
                }
                Err(_) => break,
            }
        }
        assert!(total <= body.len());
        let now = Instant::now();
        let from = SocketAddr::from(([127, 0, 0, 1], 6783));
        let mut conn = connection(None);
        conn.confirm(now);
        let mut copy = body.to_vec();
        let _ = conn.receive(now, from, &mut copy, |_| {});
        while conn.poll_action().is_some() {}
    }
}

/// Opens `data` as an encrypted datagram body, then checks that a sealed
/// datagram with bytes of `data` flipped never opens as something else.
pub fn fuzz_open(data: &[u8]) {
    let mut opener = Opener::new(Some(&KEY), false);
    let mut copy = data.to_vec();
    let _ = opener.open_in_place(&mut copy);

    let mut sealer = StreamSealer::new(Some(&KEY), true, data.first().is_some_and(|b| b & 1 == 1));
    let mut b = sealer.builder(&REMOTE);
    let payload = data.get(..data.len().min(2000)).unwrap_or_default();
    if b.push(&REMOTE, &LOCAL, payload).is_err() {
        return;
    }
    let datagram = sealer.seal(b);
    let mut body = datagram.get(6..).unwrap_or_default().to_vec();
    if let (Some(&pos), Some(&flip)) = (data.get(1), data.get(2)) {
        let at = usize::from(pos) % body.len().max(1);
        if let Some(byte) = body.get_mut(at) {
            *byte ^= flip;
        }
        let mut fresh = Opener::new(Some(&KEY), false);
        let opened = fresh.open_in_place(&mut body).map(|p| p.to_vec());
        if flip == 0 {
            let list = opened.unwrap_or_default();
            let first = frames(&list)
                .next()
                .and_then(|r| r.ok())
                .map(|r| r.frame.to_vec());
            assert_eq!(first.as_deref(), Some(payload));
        } else {
            assert!(opened.is_err(), "a tampered datagram opened");
        }
    }
}

/// Feeds sequence numbers derived from `data` to a replay window and
/// checks no number is ever accepted twice.
pub fn fuzz_replay_window(data: &[u8]) {
    let mut window = ReplayWindow::new();
    let mut accepted = std::collections::HashSet::new();
    let mut seq: u64 = 0;
    for chunk in data.chunks(3) {
        let step = u64::from(u16::from_le_bytes([
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
        ]));
        let mode = chunk.get(2).copied().unwrap_or(0);
        seq = match mode % 4 {
            0 => seq.wrapping_add(step),
            1 => seq.wrapping_sub(step),
            2 => seq.wrapping_add(step << 12),
            _ => seq.wrapping_sub(step << 12),
        } & !super::crypto::DF_BIT;
        if window.accept(seq) {
            assert!(accepted.insert(seq), "seq {seq} accepted twice");
        }
    }
}

/// Treats `data` as a captured Ethernet frame: decoding, the ICMP reply,
/// fragmentation (pieces must reassemble to the original payload) and
/// checksum completion.
pub fn fuzz_ethernet(data: &[u8]) {
    let Some(d) = decode(data) else {
        return;
    };
    let Some(ip) = d.ipv4 else {
        return;
    };
    let mtu_seed = data.get(data.len().saturating_sub(1)).copied().unwrap_or(0);
    let mtu = 20 + usize::from(mtu_seed) * 4;
    let icmp = icmp_frag_needed(data, &d, &ip, mtu as u16);
    assert!(decode(&icmp).and_then(|d| d.ipv4).is_some());
    let mut joined = Vec::new();
    if fragment(data, &ip, mtu, |p| {
        let pd = decode(&p).and_then(|d| d.ipv4);
        if let Some(pi) = pd {
            let end = 14 + usize::from(pi.total_len);
            joined.extend_from_slice(p.get(14 + pi.header_len..end).unwrap_or_default());
        }
    })
    .is_ok()
    {
        let start = 14 + ip.header_len;
        let end = 14 + usize::from(ip.total_len);
        assert_eq!(Some(&joined[..]), data.get(start..end));
    }
    let mut copy = data.to_vec();
    let _ = recompute_l4(&mut copy);
    let hint = PartialHint {
        csum_start: u16::from_be_bytes([data[0], data[1]]),
        csum_offset: u16::from(data[2]),
    };
    let _ = complete_checksum(&mut copy, Some(hint));
}

/// Control-message paths: the switch's unwrapping and a connection's
/// handling of whatever tag and body result.
pub fn fuzz_control(data: &[u8]) {
    if let Ok(c) = unwrap_control(data) {
        let mut conn = connection(None);
        let _ = conn.on_control(Instant::now(), c.tag, c.msg);
        while conn.poll_action().is_some() {}
    }
}

/// The userspace offloads on a captured or received frame: `data[0..2]`
/// is a segment size, the rest a frame that is cut as a GSO super-frame
/// and queued (twice, so a merge is attempted) for injection. Every
/// segment must fit the size asked for plus the frame's headers, and
/// every queued frame must start with a vnet header.
pub fn fuzz_offload(data: &[u8]) {
    let Some((size, frame)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mss = usize::from(u16::from_be_bytes(*size));
    let mut scratch = Vec::new();
    let mut segments = Vec::new();
    if segment_tcp(frame, mss, &mut scratch, |s| segments.push(s.to_vec())).is_ok() {
        for s in &segments {
            assert!(
                s.len() <= frame.len() + 14,
                "segment longer than its source"
            );
        }
    }
    let mut queue = Coalescer::new();
    queue.push(frame);
    queue.push(frame);
    for s in &segments {
        queue.push(s);
    }
    assert!(queue.frames().all(|f| f.len() >= VNET_HDR_LEN));
}

#[cfg(test)]
mod tests {
    use super::*;

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn bytes(&mut self, max: usize) -> Vec<u8> {
            let len = (self.next() as usize) % (max + 1);
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    fn valid_datagram(rng: &mut XorShift) -> Vec<u8> {
        let mut out = LOCAL.to_vec();
        for _ in 0..(rng.next() % 4) {
            let mut frame = super::super::checksum::tests::l4_frame(17, &rng.bytes(300), true);
            if rng.next() % 3 == 0 {
                frame = vec![0; 22];
            }
            super::super::frame::append_frame(&mut out, &REMOTE, &LOCAL, &frame).unwrap();
        }
        out
    }

    #[test]
    fn fuzz_bodies_survive_random_and_mutated_inputs() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..4000 {
            let mut data = if round % 2 == 0 {
                rng.bytes(400)
            } else {
                valid_datagram(&mut rng)
            };
            if round % 4 == 1 && !data.is_empty() {
                let at = (rng.next() as usize) % data.len();
                data[at] ^= rng.next() as u8 | 1;
            }
            fuzz_decode_frames(&data);
            fuzz_open(&data);
            fuzz_replay_window(&data);
            fuzz_control(&data);
            fuzz_ethernet(&data);
            if data.len() > 6 {
                fuzz_ethernet(&data[6..]);
            }
            let ip = super::super::checksum::tests::l4_frame(
                if round % 2 == 0 { 6 } else { 17 },
                &rng.bytes(3000),
                false,
            );
            let mut ip = ip;
            let last = ip.len() - 1;
            ip[last] = rng.next() as u8;
            fuzz_ethernet(&ip);
            let mut offload = ((rng.next() % 1600) as u16).to_be_bytes().to_vec();
            offload.extend_from_slice(&ip);
            if round % 3 == 0 {
                let at = 2 + (rng.next() as usize) % ip.len();
                offload[at] ^= rng.next() as u8;
            }
            fuzz_offload(&offload);
            fuzz_offload(&data);
        }
    }
}
