//! One sleeve connection to a directly connected peer (Weave's
//! `sleeveForwarder`), as a sans-IO state machine.
//!
//! It owns the two sending streams and the receiver of the connection,
//! the heartbeats, the fragmentation test and path MTU discovery, and
//! decides how each captured frame travels:
//!
//! - DF frames that fit the MTU go on the DF stream; too big ones are
//!   answered with ICMP "fragmentation needed" (handed back to the caller,
//!   which delivers it locally as coming from the destination), except
//!   broadcasts, which are dropped.
//! - Other frames go on the non-DF stream (where the kernel may fragment
//!   the datagram) when the fragmentation test showed that fragmented
//!   datagrams arrive, or when the frame is not IPv4. Otherwise they take
//!   the DF stream, fragmented here first if larger than the MTU.
//!
//! Frames are aggregated: [`SleeveConnection::forward`] fills one pending
//! datagram per stream, starting a new one when the next frame would push
//! it past the path's payload limit, and [`SleeveConnection::flush`] seals
//! what is pending. The caller drains [`SleeveAction`]s after every call.
//!
//! Control messages use the legacy sleeve tags of the mesh protocol; under
//! the overlay switch they travel wrapped with the overlay index.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::crypto::{OpenError, Opener, StreamSealer};
use super::ethernet::{FragmentError, decode, fragment, frame_too_big, icmp_frag_needed};
use super::frame::{
    DatagramBuilder, ETHERNET_OVERHEAD, FRAME_HEADER_LEN, FrameError, FrameRef,
    MAX_UDP_PACKET_SIZE, NameBytes, UDP_OVERHEAD, frames,
};
use super::heartbeat::{HeartbeatEvent, Heartbeats};
use super::pmtu::{PMTU_DISCOVERY_SIZE, Pmtu, PmtuStep};
use crate::mesh::crypto::SessionKey;

/// Control tag: "your heartbeat arrived" (mesh `ProtocolReserved1`).
pub const CONTROL_CONNECTION_ESTABLISHED: u8 = 1;
/// Control tag: "your fragmentation test arrived" (`ProtocolReserved2`).
pub const CONTROL_FRAGMENTATION_RECEIVED: u8 = 2;
/// Control tag: "your MTU probe arrived", with its size as a big-endian
/// u16 (`ProtocolReserved3`).
pub const CONTROL_PMTU_VERIFIED: u8 = 3;

/// Size of the fragmentation test frame (special frames are told apart by
/// size).
pub const FRAG_TEST_SIZE: usize = 60001;
/// Size of a heartbeat frame: an Ethernet header then the connection UID.
pub const HEARTBEAT_FRAME_LEN: usize = ETHERNET_OVERHEAD + 8;
/// Size limit of datagrams on the non-DF stream.
pub const NON_DF_LIMIT: usize = MAX_UDP_PACKET_SIZE - UDP_OVERHEAD;

/// What a sleeve connection is created with (Weave's overlay connection
/// parameters).
#[derive(Debug, Clone)]
pub struct SleeveParams {
    /// Our peer name.
    pub local: NameBytes,
    /// The peer's name.
    pub remote: NameBytes,
    /// Whether we dialled the mesh connection.
    pub outbound: bool,
    /// The mesh connection's UID (both sides know it).
    pub conn_uid: u64,
    /// The mesh session key when the connection is encrypted (a password
    /// is set and the link is not trusted on both sides).
    pub session_key: Option<SessionKey>,
    /// The peer's UDP address, known up front when we dialled (the TCP
    /// address; UDP uses the same port). The other side learns it from
    /// the first heartbeat.
    pub remote_addr: Option<SocketAddr>,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SleeveError {
    /// No valid heartbeat for the heartbeat timeout.
    #[error("timed out waiting for UDP heartbeat")]
    HeartbeatTimeout,
}

/// What the shell must do for the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SleeveAction {
    /// Send a UDP datagram from the sleeve port. With `df` the datagram
    /// must leave with Don't Fragment set and the kernel's PMTU discovery
    /// on; an `EMSGSIZE` is reported through
    /// [`SleeveConnection::on_msg_too_big`]. Without, it must leave with
    /// DF clear (the socket's PMTU discovery off).
    Send {
        /// Where to.
        to: SocketAddr,
        /// Whether DF must be set.
        df: bool,
        /// The whole UDP payload.
        datagram: Vec<u8>,
    },
    /// Send a control message to the peer over the mesh connection.
    Control {
        /// The sleeve control tag.
        tag: u8,
        /// Its body.
        body: Vec<u8>,
    },
    /// The peer answered our heartbeats: the connection is established.
    Established,
    /// Path MTU discovery settled on this overlay MTU.
    MtuVerified(usize),
    /// The connection is dead; stop using it.
    Failed(SleeveError),
}

/// Why a received datagram was not (wholly) processed. Frames before a
/// framing error have already been delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// Decryption or replay check failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The frame list is malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// A control message the connection could not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The tag is not a sleeve tag.
    #[error("unknown sleeve control message tag {0}")]
    UnknownTag(u8),
    /// The MTU acknowledgement lacks its two bytes.
    #[error("truncated MTU test acknowledgement")]
    Truncated,
}

/// Why a frame was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The peer's UDP address is not known yet.
    NoContact,
    /// A DF broadcast larger than the MTU (no single sender to tell).
    DfBroadcastTooBig,
    /// Larger than a datagram can carry on its stream.
    TooBig,
    /// Needed fragmenting and could not be.
    Unfragmentable(FragmentError),
}

/// What happened to a forwarded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardOutcome {
    /// Added to a pending datagram (sent at the latest on `flush`).
    Queued,
    /// Too big for the MTU with DF set: this ICMP "fragmentation needed"
    /// frame must be delivered locally as if sent from the destination
    /// peer back to the source peer.
    FragNeeded(Vec<u8>),
    /// Not sent.
    Dropped(DropReason),
}

/// A snapshot for status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SleeveStatus {
    /// The overlay MTU in force.
    pub mtu: usize,
    /// The MTU under test, if discovery is running.
    pub mtu_candidate: Option<usize>,
    /// The peer's UDP address, once known.
    pub remote_addr: Option<SocketAddr>,
    /// Whether the peer answered our heartbeats.
    pub established: bool,
    /// Whether datagrams are encrypted.
    pub encrypted: bool,
    /// Whether the last fragmentation test came through.
    pub stack_frag: bool,
    /// Whether the connection has failed.
    pub failed: bool,
}

/// One sleeve connection.
#[derive(Debug)]
pub struct SleeveConnection {
    local: NameBytes,
    remote: NameBytes,
    conn_uid: u64,
    remote_addr: Option<SocketAddr>,
    sealer: StreamSealer,
    sealer_df: StreamSealer,
    opener: Opener,
    pending: Option<DatagramBuilder>,
    pending_df: Option<DatagramBuilder>,
    heartbeats: Heartbeats,
    pmtu: Pmtu,
    stack_frag: bool,
    failed: bool,
    actions: VecDeque<SleeveAction>,
}

impl SleeveConnection {
    /// A connection prepared but not yet confirmed by the mesh.
    pub fn new(params: SleeveParams) -> Self {
        let key = params.session_key.as_ref();
        let sealer = StreamSealer::new(key, params.outbound, false);
        let sealer_df = StreamSealer::new(key, params.outbound, true);
        let overhead_df =
            UDP_OVERHEAD + sealer_df.header_len() + FRAME_HEADER_LEN + ETHERNET_OVERHEAD;
        SleeveConnection {
            local: params.local,
            remote: params.remote,
            conn_uid: params.conn_uid,
            remote_addr: params.remote_addr,
            sealer,
            sealer_df,
            opener: Opener::new(key, params.outbound),
            pending: None,
            pending_df: None,
            heartbeats: Heartbeats::new(),
            pmtu: Pmtu::new(overhead_df),
            stack_frag: false,
            failed: false,
            actions: VecDeque::new(),
        }
    }

    /// The next thing the shell must do, if any.
    pub fn poll_action(&mut self) -> Option<SleeveAction> {
        self.actions.pop_front()
    }

    /// The overlay MTU in force.
    pub fn mtu(&self) -> usize {
        self.pmtu.mtu()
    }

    /// Bytes the sleeve adds to an IP packet sent DF: IP + UDP headers,
    /// datagram header, frame header and Ethernet header (62 in the clear,
    /// 86 encrypted).
    pub fn overhead_df(&self) -> usize {
        self.pmtu.overhead_df()
    }

    /// The peer's UDP address, once known.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// Whether the peer answered our heartbeats.
    pub fn is_established(&self) -> bool {
        self.heartbeats.established()
    }

    /// Whether the connection has failed.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// A snapshot for status pages.
    pub fn status(&self) -> SleeveStatus {
        SleeveStatus {
            mtu: self.pmtu.mtu(),
            mtu_candidate: self.pmtu.candidate(),
            remote_addr: self.remote_addr,
            established: self.heartbeats.established(),
            encrypted: self.sealer.is_encrypted(),
            stack_frag: self.stack_frag,
            failed: self.failed,
        }
    }

    /// When [`SleeveConnection::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed {
            return None;
        }
        [self.heartbeats.next_deadline(), self.pmtu.deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The mesh confirmed the connection: heartbeats start. The shell
    /// should route the peer's datagrams to this connection from now on.
    pub fn confirm(&mut self, now: Instant) {
        let mut events = Vec::new();
        self.heartbeats
            .confirm(now, self.remote_addr.is_some(), &mut events);
        self.run_events(events);
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        let mut events = Vec::new();
        self.heartbeats.poll(now, &mut events);
        self.run_events(events);
        if self.failed {
            return;
        }
        if let Some(step) = self.pmtu.on_timeout(now) {
            self.pmtu_step(step);
        }
    }

    /// A DF datagram was refused with `EMSGSIZE`; the kernel's path MTU
    /// (`IP_MTU` of the socket) is now `underlay_pmtu`.
    pub fn on_msg_too_big(&mut self, now: Instant, underlay_pmtu: usize) {
        if let Some(step) = self.pmtu.on_msg_too_big(now, underlay_pmtu) {
            self.pmtu_step(step);
        }
    }

    /// A sleeve control message from the peer.
    pub fn on_control(&mut self, now: Instant, tag: u8, body: &[u8]) -> Result<(), ControlError> {
        match tag {
            CONTROL_CONNECTION_ESTABLISHED => {
                let mut events = Vec::new();
                self.heartbeats.on_ack(now, &mut events);
                self.run_events(events);
            }
            CONTROL_FRAGMENTATION_RECEIVED => self.stack_frag = true,
            CONTROL_PMTU_VERIFIED => {
                let size = body.first_chunk::<2>().ok_or(ControlError::Truncated)?;
                if let Some(step) = self.pmtu.on_ack(now, u16::from_be_bytes(*size)) {
                    self.pmtu_step(step);
                }
            }
            other => return Err(ControlError::UnknownTag(other)),
        }
        Ok(())
    }

    /// Processes a datagram from the peer: `body` is the datagram after
    /// the sender name (which the shell used to find this connection) and
    /// is decrypted in place. Ordinary frames go to `deliver`; the peer's
    /// probes are handled here.
    pub fn receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        body: &mut [u8],
        mut deliver: impl FnMut(FrameRef<'_>),
    ) -> Result<usize, ReceiveError> {
        let plain = self.opener.open_in_place(body)?;
        let mut delivered = 0;
        for record in frames(plain) {
            let record = record?;
            let Some(decoded) = decode(record.frame) else {
                continue;
            };
            if decoded.is_special() {
                if record.src == self.remote && record.dst == self.local {
                    self.handle_special(now, from, record.frame);
                }
                continue;
            }
            deliver(record);
            delivered += 1;
        }
        Ok(delivered)
    }

    fn handle_special(&mut self, now: Instant, from: SocketAddr, frame: &[u8]) {
        match frame.len() {
            HEARTBEAT_FRAME_LEN => {
                let uid = frame
                    .get(ETHERNET_OVERHEAD..)
                    .and_then(|b| b.first_chunk::<8>())
                    .map(|b| u64::from_be_bytes(*b));
                if uid != Some(self.conn_uid) {
                    return;
                }
                let learned = self.remote_addr.is_none();
                self.remote_addr = Some(from);
                let mut events = Vec::new();
                self.heartbeats.on_heartbeat(now, learned, &mut events);
                self.run_events(events);
            }
            FRAG_TEST_SIZE => {
                if frame.iter().all(|b| *b == 0) {
                    self.control(CONTROL_FRAGMENTATION_RECEIVED, Vec::new());
                }
            }
            len => {
                let size = (len - ETHERNET_OVERHEAD) as u16;
                self.control(CONTROL_PMTU_VERIFIED, size.to_be_bytes().to_vec());
            }
        }
    }

    fn control(&mut self, tag: u8, body: Vec<u8>) {
        self.actions.push_back(SleeveAction::Control { tag, body });
    }

    fn run_events(&mut self, events: Vec<HeartbeatEvent>) {
        for event in events {
            match event {
                HeartbeatEvent::SendHeartbeat => {
                    let mut frame = [0u8; HEARTBEAT_FRAME_LEN];
                    frame[ETHERNET_OVERHEAD..].copy_from_slice(&self.conn_uid.to_be_bytes());
                    self.send_special(true, &frame);
                }
                HeartbeatEvent::AckPeer => {
                    self.control(CONTROL_CONNECTION_ESTABLISHED, Vec::new());
                }
                HeartbeatEvent::Established => self.actions.push_back(SleeveAction::Established),
                HeartbeatEvent::FragTest => {
                    self.stack_frag = false;
                    self.send_special(false, &vec![0u8; FRAG_TEST_SIZE]);
                }
                HeartbeatEvent::StartPmtuDiscovery => {
                    // Bigger than any path: the kernel refuses it and
                    // reports the path MTU, which starts the search.
                    self.send_special(true, &vec![0u8; PMTU_DISCOVERY_SIZE]);
                }
                HeartbeatEvent::TimedOut => {
                    self.failed = true;
                    self.pending = None;
                    self.pending_df = None;
                    self.actions
                        .push_back(SleeveAction::Failed(SleeveError::HeartbeatTimeout));
                }
            }
        }
    }

    fn pmtu_step(&mut self, step: PmtuStep) {
        match step {
            PmtuStep::Probe { frame_len } => self.send_special(true, &vec![0u8; frame_len]),
            PmtuStep::Verified { mtu } => self.actions.push_back(SleeveAction::MtuVerified(mtu)),
        }
    }

    fn send_special(&mut self, df: bool, frame: &[u8]) {
        if self.remote_addr.is_none() {
            return;
        }
        self.flush_stream(df);
        let (local, remote) = (self.local, self.remote);
        let sealer = if df {
            &mut self.sealer_df
        } else {
            &mut self.sealer
        };
        let mut b = sealer.builder(&local);
        if b.push(&local, &remote, frame).is_ok() {
            let datagram = sealer.seal(b);
            self.emit(df, datagram);
        }
    }

    fn emit(&mut self, df: bool, datagram: Vec<u8>) {
        if let Some(to) = self.remote_addr {
            self.actions
                .push_back(SleeveAction::Send { to, df, datagram });
        }
    }

    fn flush_stream(&mut self, df: bool) {
        let (slot, sealer) = if df {
            (&mut self.pending_df, &mut self.sealer_df)
        } else {
            (&mut self.pending, &mut self.sealer)
        };
        if let Some(b) = slot.take() {
            let datagram = sealer.seal(b);
            self.emit(df, datagram);
        }
    }

    /// Seals and queues every pending datagram.
    pub fn flush(&mut self) {
        self.flush_stream(false);
        self.flush_stream(true);
    }

    fn enqueue(&mut self, df: bool, src: &NameBytes, dst: &NameBytes, frame: [&[u8]; 2]) -> bool {
        let frame_len = frame[0].len() + frame[1].len();
        let max_payload = self.pmtu.max_payload();
        let limit = if df { max_payload } else { NON_DF_LIMIT };
        let local = self.local;
        let (slot, sealer) = if df {
            (&mut self.pending_df, &mut self.sealer_df)
        } else {
            (&mut self.pending, &mut self.sealer)
        };
        let mut sealed = None;
        if let Some(b) = slot.as_mut() {
            if b.fits(frame_len, max_payload) {
                return b.push_parts(src, dst, frame).is_ok();
            }
            sealed = slot.take().map(|b| sealer.seal(b));
        }
        let mut b = sealer.builder(&local);
        let ok = b.fits(frame_len, limit) && b.push_parts(src, dst, frame).is_ok();
        if ok {
            *slot = Some(b);
        }
        if let Some(datagram) = sealed {
            self.emit(df, datagram);
        }
        ok
    }

    /// Sends a captured frame from peer `src` to peer `dst` over this
    /// connection. `broadcast` says the frame is being flooded (a
    /// broadcast, or a destination the MAC cache does not know).
    pub fn forward(
        &mut self,
        src: &NameBytes,
        dst: &NameBytes,
        frame: &[u8],
        broadcast: bool,
    ) -> ForwardOutcome {
        self.forward_parts(src, dst, [frame, &[]], broadcast)
    }

    /// [`Self::forward`] for a frame in two pieces, its concatenation
    /// (a segment's headers and its payload, still where the capture put
    /// it): the pieces are copied straight into the datagram. The first
    /// piece must hold the Ethernet and IP headers.
    pub fn forward_parts(
        &mut self,
        src: &NameBytes,
        dst: &NameBytes,
        frame: [&[u8]; 2],
        broadcast: bool,
    ) -> ForwardOutcome {
        if self.remote_addr.is_none() || self.failed {
            return ForwardOutcome::Dropped(DropReason::NoContact);
        }
        let mtu = self.pmtu.mtu();
        let frame_len = frame[0].len() + frame[1].len();
        let decoded = decode(frame[0]);
        let queued = |ok: bool| {
            if ok {
                ForwardOutcome::Queued
            } else {
                ForwardOutcome::Dropped(DropReason::TooBig)
            }
        };
        let df = decoded.and_then(|d| d.ipv4.filter(|ip| ip.dont_fragment()).map(|ip| (d, ip)));
        if let Some((d, ip)) = df {
            if !frame_too_big(frame_len, mtu) {
                return queued(self.enqueue(true, src, dst, frame));
            }
            if broadcast {
                return ForwardOutcome::Dropped(DropReason::DfBroadcastTooBig);
            }
            let mtu16 = u16::try_from(mtu).unwrap_or(u16::MAX);
            return ForwardOutcome::FragNeeded(icmp_frag_needed(&whole(frame), &d, &ip, mtu16));
        }
        let ipv4 = decoded.and_then(|d| d.ipv4);
        let Some(ip) = ipv4.filter(|_| !self.stack_frag) else {
            return queued(self.enqueue(false, src, dst, frame));
        };
        if !frame_too_big(frame_len, mtu) {
            return queued(self.enqueue(true, src, dst, frame));
        }
        let mut pieces = Vec::new();
        if let Err(e) = fragment(&whole(frame), &ip, mtu, |p| pieces.push(p)) {
            return ForwardOutcome::Dropped(DropReason::Unfragmentable(e));
        }
        let mut all = true;
        for p in pieces {
            all &= self.enqueue(true, src, dst, [p.as_slice(), &[]]);
        }
        queued(all)
    }

    /// Weave's status attributes of the connection: `name` and `mtu`.
    pub fn attrs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("name", "sleeve".to_string()),
            ("mtu", self.pmtu.mtu().to_string()),
        ]
    }
}

/// A frame in two pieces as one slice, copied only when the second piece
/// is not empty (for the rare paths that rewrite or cut a frame).
fn whole<'a>(frame: [&'a [u8]; 2]) -> std::borrow::Cow<'a, [u8]> {
    if frame[1].is_empty() {
        std::borrow::Cow::Borrowed(frame[0])
    } else {
        std::borrow::Cow::Owned(frame.concat())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::checksum::IPPROTO_UDP;
    use super::super::checksum::tests::l4_frame;
    use super::super::heartbeat::HEARTBEAT_TIMEOUT;
    use super::*;

    const A: NameBytes = [0, 0, 0, 0, 0, 0xa];
    const B: NameBytes = [0, 0, 0, 0, 0, 0xb];
    const UID: u64 = 0x1122_3344_5566_7788;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 168, 1, last], 6783))
    }

    #[derive(Default)]
    struct Side {
        delivered: Vec<(NameBytes, NameBytes, Vec<u8>)>,
        established: bool,
        verified: Vec<usize>,
        failed: Option<SleeveError>,
        errors: Vec<ReceiveError>,
        sent: Vec<(bool, Vec<u8>)>,
    }

    /// Two connections joined by a simulated underlay with a path MTU.
    struct Net {
        conns: [SleeveConnection; 2],
        sides: [Side; 2],
        path_mtu: usize,
        drop_fragments: bool,
        cut: bool,
    }

    impl Net {
        fn new(key: Option<SessionKey>, path_mtu: usize) -> Self {
            let a = SleeveConnection::new(SleeveParams {
                local: A,
                remote: B,
                outbound: true,
                conn_uid: UID,
                session_key: key.clone(),
                remote_addr: Some(addr(2)),
            });
            let b = SleeveConnection::new(SleeveParams {
                local: B,
                remote: A,
                outbound: false,
                conn_uid: UID,
                session_key: key,
                remote_addr: None,
            });
            Net {
                conns: [a, b],
                sides: [Side::default(), Side::default()],
                path_mtu,
                drop_fragments: false,
                cut: false,
            }
        }

        fn pump(&mut self, now: Instant) {
            loop {
                let mut any = false;
                for i in 0..2 {
                    while let Some(action) = self.conns[i].poll_action() {
                        any = true;
                        self.apply(i, now, action);
                    }
                }
                if !any {
                    return;
                }
            }
        }

        fn apply(&mut self, i: usize, now: Instant, action: SleeveAction) {
            let j = 1 - i;
            match action {
                SleeveAction::Send { to, df, datagram } => {
                    assert_eq!(to, addr(j as u8 + 1));
                    assert_eq!(&datagram[..6], if i == 0 { &A } else { &B });
                    self.sides[i].sent.push((df, datagram.clone()));
                    let wire = datagram.len() + UDP_OVERHEAD;
                    if df && wire > self.path_mtu {
                        self.conns[i].on_msg_too_big(now, self.path_mtu);
                        return;
                    }
                    if self.cut || (wire > self.path_mtu && self.drop_fragments) {
                        return;
                    }
                    self.deliver(j, now, datagram);
                }
                SleeveAction::Control { tag, body } => {
                    if !self.cut {
                        self.conns[j].on_control(now, tag, &body).unwrap();
                    }
                }
                SleeveAction::Established => self.sides[i].established = true,
                SleeveAction::MtuVerified(m) => self.sides[i].verified.push(m),
                SleeveAction::Failed(e) => self.sides[i].failed = Some(e),
            }
        }

        fn deliver(&mut self, j: usize, now: Instant, mut datagram: Vec<u8>) {
            let from = addr(2 - j as u8);
            let side = &mut self.sides[j];
            let r = self.conns[j].receive(now, from, &mut datagram[6..], |f| {
                side.delivered.push((f.src, f.dst, f.frame.to_vec()))
            });
            if let Err(e) = r {
                side.errors.push(e);
            }
        }

        fn run_until(&mut self, start: Instant, end: Instant) {
            self.pump(start);
            loop {
                let next = self.conns.iter().filter_map(|c| c.poll_timeout()).min();
                match next {
                    Some(t) if t <= end => {
                        for c in &mut self.conns {
                            c.handle_timeout(t);
                        }
                        self.pump(t);
                    }
                    _ => return,
                }
            }
        }

        fn establish(&mut self, t0: Instant) {
            for c in &mut self.conns {
                c.confirm(t0);
            }
            self.run_until(t0, t0 + Duration::from_secs(2));
        }
    }

    #[test]
    fn handshake_and_pmtu_plain() {
        let t0 = Instant::now();
        let mut net = Net::new(None, 1500);
        net.establish(t0);
        for side in &net.sides {
            assert!(side.established);
            assert_eq!(side.verified, vec![1438]);
            assert!(side.failed.is_none());
            assert!(side.errors.is_empty());
        }
        assert_eq!(net.conns[1].remote_addr(), Some(addr(1)));
        let s = net.conns[0].status();
        assert_eq!((s.mtu, s.stack_frag, s.encrypted), (1438, true, false));
        assert_eq!(net.conns[0].overhead_df(), 62);
        // The first datagram a sends is its heartbeat, DF, in the clear.
        let (df, hb) = &net.sides[0].sent[0];
        assert!(*df);
        let mut want = [&A[..], &A[..], &B[..], &[0, 22]].concat();
        want.extend_from_slice(&[0; 14]);
        want.extend_from_slice(&UID.to_be_bytes());
        assert_eq!(hb, &want);
    }

    #[test]
    fn handshake_and_pmtu_encrypted() {
        let t0 = Instant::now();
        let mut net = Net::new(Some(SessionKey([5; 32])), 1500);
        net.establish(t0);
        assert_eq!(net.sides[0].verified, vec![1414]);
        assert_eq!(net.sides[1].verified, vec![1414]);
        assert_eq!(net.conns[0].overhead_df(), 86);
        assert!(net.conns[0].status().encrypted);
        // The probe that verified filled the path exactly.
        let biggest = net.sides[0]
            .sent
            .iter()
            .filter(|(df, d)| *df && d.len() + 28 <= 1500)
            .map(|(_, d)| d.len())
            .max();
        assert_eq!(biggest, Some(1472));
    }

    #[test]
    fn frames_are_aggregated_and_delivered() {
        let t0 = Instant::now();
        let mut net = Net::new(Some(SessionKey([6; 32])), 1500);
        net.establish(t0);
        let before = net.sides[0].sent.len();
        let small: Vec<Vec<u8>> = (0..5u8)
            .map(|i| l4_frame(IPPROTO_UDP, &[i; 40], false))
            .collect();
        for f in &small {
            assert_eq!(
                net.conns[0].forward(&A, &B, f, false),
                ForwardOutcome::Queued
            );
        }
        net.conns[0].flush();
        net.pump(t0);
        // All five in one datagram; the frag test passed, so non-DF.
        assert_eq!(net.sides[0].sent.len(), before + 1);
        let got: Vec<_> = net.sides[1].delivered.iter().map(|d| d.2.clone()).collect();
        assert_eq!(got, small);
        // Frames of 1000 bytes: one per datagram under a 1472-byte payload.
        let before = net.sides[0].sent.len();
        let big = l4_frame(IPPROTO_UDP, &[9; 958], false);
        assert_eq!(big.len(), 1000);
        for _ in 0..3 {
            net.conns[0].forward(&A, &B, &big, false);
        }
        net.conns[0].flush();
        net.pump(t0);
        let sent = &net.sides[0].sent[before..];
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|(df, d)| !*df && d.len() == 30 + 14 + 1000));
        assert_eq!(net.sides[1].delivered.len(), 8);
    }

    #[test]
    fn relayed_frames_keep_their_names_and_non_ip_goes_non_df() {
        let t0 = Instant::now();
        let mut net = Net::new(None, 1500);
        net.establish(t0);
        let c: NameBytes = [0, 0, 0, 0, 0, 0xc];
        let arp = {
            let mut f = l4_frame(IPPROTO_UDP, b"", false);
            f[12..14].copy_from_slice(&[0x08, 0x06]);
            f
        };
        let before = net.sides[0].sent.len();
        net.conns[0].forward(&c, &B, &arp, true);
        net.conns[0].flush();
        net.pump(t0);
        assert!(!net.sides[0].sent[before].0, "non-IP frames go without DF");
        assert_eq!(net.sides[1].delivered, vec![(c, B, arp)]);
    }

    #[test]
    fn df_frame_too_big_gets_icmp() {
        let t0 = Instant::now();
        let mut net = Net::new(None, 1500);
        net.establish(t0);
        let f = l4_frame(IPPROTO_UDP, &[1; 1500], true);
        let ForwardOutcome::FragNeeded(icmp) = net.conns[0].forward(&A, &B, &f, false) else {
            panic!("expected ICMP");
        };
        assert_eq!(&icmp[34..36], &[3, 4]);
        assert_eq!(u16::from_be_bytes([icmp[40], icmp[41]]), 1438);
        assert_eq!(
            net.conns[0].forward(&A, &B, &f, true),
            ForwardOutcome::Dropped(DropReason::DfBroadcastTooBig)
        );
        // At the MTU exactly it goes.
        let fits = l4_frame(IPPROTO_UDP, &[1; 1438 - 28], true);
        assert_eq!(
            net.conns[0].forward(&A, &B, &fits, false),
            ForwardOutcome::Queued
        );
    }

    /// A frame handed over in two pieces goes exactly as the whole frame
    /// would, on the fast path and on the ICMP and fragmenting paths.
    #[test]
    fn frames_in_two_pieces_go_as_whole_frames() {
        let t0 = Instant::now();
        let small = l4_frame(IPPROTO_UDP, &[5; 700], true);
        let too_big = l4_frame(IPPROTO_UDP, &[6; 1500], true);
        let non_df: Vec<u8> = l4_frame(IPPROTO_UDP, &[7; 3000], false);
        let mut sent = Vec::new();
        for split in [false, true] {
            let mut net = Net::new(None, 1500);
            net.drop_fragments = true;
            net.establish(t0);
            let before = net.sides[0].sent.len();
            let mut outcomes = Vec::new();
            for f in [&small, &too_big, &non_df] {
                let parts: [&[u8]; 2] = if split {
                    [&f[..54], &f[54..]]
                } else {
                    [f, &[]]
                };
                outcomes.push(net.conns[0].forward_parts(&A, &B, parts, false));
            }
            net.conns[0].flush();
            net.pump(t0);
            assert_eq!(outcomes[0], ForwardOutcome::Queued);
            assert!(matches!(outcomes[1], ForwardOutcome::FragNeeded(_)));
            assert_eq!(outcomes[2], ForwardOutcome::Queued);
            sent.push((outcomes, net.sides[0].sent[before..].to_vec()));
        }
        assert_eq!(sent[0], sent[1]);
    }

    #[test]
    fn big_non_df_frames_fragment_unless_the_stack_does() {
        let t0 = Instant::now();
        let mut net = Net::new(None, 1500);
        net.drop_fragments = true;
        net.establish(t0);
        assert!(!net.conns[0].status().stack_frag, "fragments were dropped");
        let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        let f = l4_frame(IPPROTO_UDP, &payload, false);
        assert_eq!(
            net.conns[0].forward(&A, &B, &f, false),
            ForwardOutcome::Queued
        );
        net.conns[0].flush();
        net.pump(t0);
        let pieces = &net.sides[1].delivered;
        assert_eq!(pieces.len(), 3);
        let mut joined = Vec::new();
        for (_, _, p) in pieces {
            let total = usize::from(u16::from_be_bytes([p[16], p[17]]));
            assert!(total <= 1438);
            joined.extend_from_slice(&p[34..14 + total]);
        }
        assert_eq!(joined, f[34..]);

        // With working stack fragmentation the frame goes whole, non-DF.
        let mut net = Net::new(None, 1500);
        net.establish(t0);
        assert!(net.conns[0].status().stack_frag);
        let before = net.sides[0].sent.len();
        net.conns[0].forward(&A, &B, &f, false);
        net.conns[0].flush();
        net.pump(t0);
        assert!(!net.sides[0].sent[before].0);
        assert_eq!(net.sides[1].delivered, vec![(A, B, f)]);
    }

    #[test]
    fn replayed_datagram_is_dropped() {
        let t0 = Instant::now();
        let mut net = Net::new(Some(SessionKey([8; 32])), 1500);
        net.establish(t0);
        let f = l4_frame(IPPROTO_UDP, b"once", false);
        net.conns[0].forward(&A, &B, &f, false);
        net.conns[0].flush();
        net.pump(t0);
        let (_, copy) = net.sides[0].sent.last().unwrap().clone();
        assert_eq!(net.sides[1].delivered.len(), 1);
        net.deliver(1, t0, copy);
        assert_eq!(net.sides[1].delivered.len(), 1);
        assert!(matches!(
            net.sides[1].errors.last(),
            Some(ReceiveError::Open(OpenError::Replayed { df: false, .. }))
        ));
    }

    #[test]
    fn silence_kills_the_connection() {
        let t0 = Instant::now();
        let mut net = Net::new(None, 1500);
        net.establish(t0);
        let t1 = t0 + Duration::from_secs(30);
        net.run_until(t0, t1);
        assert!(net.sides.iter().all(|s| s.failed.is_none()));
        net.cut = true;
        net.run_until(t1, t1 + HEARTBEAT_TIMEOUT + Duration::from_secs(10));
        for (i, side) in net.sides.iter().enumerate() {
            assert_eq!(side.failed, Some(SleeveError::HeartbeatTimeout), "side {i}");
            assert!(net.conns[i].has_failed());
            assert_eq!(net.conns[i].poll_timeout(), None);
        }
        assert_eq!(
            net.conns[0].forward(&A, &B, &[0; 60], false),
            ForwardOutcome::Dropped(DropReason::NoContact)
        );
    }

    #[test]
    fn edge_cases() {
        let t0 = Instant::now();
        let mut net = Net::new(None, 1500);
        // The listening side cannot send before it hears from the peer.
        assert_eq!(
            net.conns[1].forward(&B, &A, &[0; 60], false),
            ForwardOutcome::Dropped(DropReason::NoContact)
        );
        assert_eq!(
            net.conns[0].on_control(t0, 9, &[]),
            Err(ControlError::UnknownTag(9))
        );
        assert_eq!(
            net.conns[0].on_control(t0, CONTROL_PMTU_VERIFIED, &[1]),
            Err(ControlError::Truncated)
        );
        // A heartbeat with another connection's UID is ignored.
        let mut frame = [0u8; HEARTBEAT_FRAME_LEN];
        frame[14..].copy_from_slice(&(UID ^ 1).to_be_bytes());
        let mut list = Vec::new();
        super::super::frame::append_frame(&mut list, &A, &B, &frame).unwrap();
        net.conns[1].confirm(t0);
        net.conns[1]
            .receive(t0, addr(1), &mut list, |_| panic!())
            .unwrap();
        assert_eq!(net.conns[1].remote_addr(), None);
        assert_eq!(net.conns[1].poll_action(), None);
        // A special frame naming other peers is neither delivered nor used.
        let mut list = Vec::new();
        let mut hb = [0u8; HEARTBEAT_FRAME_LEN];
        hb[14..].copy_from_slice(&UID.to_be_bytes());
        super::super::frame::append_frame(&mut list, &[0, 0, 0, 0, 0, 0xc], &B, &hb).unwrap();
        net.conns[1]
            .receive(t0, addr(1), &mut list, |_| panic!())
            .unwrap();
        assert_eq!(net.conns[1].remote_addr(), None);
        // Short frames are skipped; garbage after them is an error.
        let mut list = Vec::new();
        super::super::frame::append_frame(&mut list, &A, &B, &[1, 2, 3]).unwrap();
        list.push(0);
        assert_eq!(
            net.conns[1].receive(t0, addr(1), &mut list, |_| panic!()),
            Err(ReceiveError::Frame(FrameError::TrailingGarbage(1)))
        );
        assert_eq!(net.conns[0].attrs()[0], ("name", "sleeve".to_string()));
    }
}
