//! Request/response over one generic-netlink socket: family resolution,
//! sequence numbers, batches and dumps.

use std::collections::HashMap;

use crate::wire::EncodeError;
use crate::wire::ctrl::{FamilyInfo, encode_get_family};
use crate::wire::netlink::{NLM_F_ACK, NLM_F_DUMP};
use crate::wire::ovs::{OvsFamily, OvsMessage};

use super::error::Error;
use super::pending::{DumpReplies, Outcome, Pending};
use super::socket::GenlSocket;

/// Something that can be encoded as one netlink request.
pub trait Request {
    /// Appends the request to `buf` with sequence number `seq`, adding
    /// `extra_flags` (`NLM_F_ACK` for a batch's barrier) to its own flags.
    fn encode(&self, buf: &mut Vec<u8>, seq: u32, extra_flags: u16) -> Result<(), EncodeError>;
}

/// An OVS family message addressed to a resolved family id.
#[derive(Debug, Clone, Copy)]
pub struct OvsRequest<'a, A: OvsFamily> {
    /// The family id.
    pub family: u16,
    /// `NLM_F_*` flags (e.g. `NLM_F_CREATE`, `NLM_F_ECHO`, `NLM_F_DUMP`).
    pub flags: u16,
    /// The message.
    pub msg: &'a OvsMessage<A>,
}

impl<A: OvsFamily> Request for OvsRequest<'_, A> {
    fn encode(&self, buf: &mut Vec<u8>, seq: u32, extra_flags: u16) -> Result<(), EncodeError> {
        self.msg
            .encode(buf, self.family, self.flags | extra_flags, seq)
    }
}

/// A `CTRL_CMD_GETFAMILY` request.
#[derive(Debug, Clone, Copy)]
pub struct GetFamily<'a>(pub &'a str);

impl Request for GetFamily<'_> {
    fn encode(&self, buf: &mut Vec<u8>, seq: u32, extra_flags: u16) -> Result<(), EncodeError> {
        encode_get_family(buf, extra_flags, seq, self.0)
    }
}

/// A request that lists every registered generic-netlink family.
#[derive(Debug, Clone, Copy)]
pub struct DumpFamilies;

impl Request for DumpFamilies {
    fn encode(&self, buf: &mut Vec<u8>, seq: u32, extra_flags: u16) -> Result<(), EncodeError> {
        use crate::wire::ctrl::{CTRL_CMD_GETFAMILY, GENL_ID_CTRL};
        use crate::wire::netlink::{GenlHeader, RequestHeader, encode_genl};
        let req = RequestHeader {
            family: GENL_ID_CTRL,
            flags: NLM_F_DUMP | extra_flags,
            seq,
            pid: 0,
            genl: GenlHeader {
                cmd: CTRL_CMD_GETFAMILY,
                version: 1,
            },
        };
        encode_genl(buf, req, |_| {})
    }
}

/// Default cap on requests per datagram.
pub const DEFAULT_BATCH_MSGS: usize = 512;
/// Default cap on bytes per datagram (well under the default send buffer).
pub const DEFAULT_BATCH_BYTES: usize = 128 * 1024;

/// Netlink sequence numbers for requests: never 0, which the kernel uses for
/// unsolicited messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqCounter(u32);

impl Default for SeqCounter {
    fn default() -> Self {
        SeqCounter(1)
    }
}

impl SeqCounter {
    /// The number the next request gets (without taking it).
    pub fn peek(&self) -> u32 {
        self.0
    }

    /// Takes the next number.
    pub fn take(&mut self) -> u32 {
        let s = self.0;
        self.0 = self.0.wrapping_add(1);
        if self.0 == 0 {
            self.0 = 1;
        }
        s
    }
}

/// Sans-IO packing of one datagram: encodes requests from the start of
/// `reqs` into `buf` (cleared first) until `max_msgs` requests or about
/// `max_bytes` bytes, giving each the next sequence number and the last one
/// `NLM_F_ACK` (the barrier, see [`Pending`]). Returns the first sequence
/// number and how many requests were packed (at least one if `reqs` is not
/// empty).
pub fn pack_window<R: Request>(
    buf: &mut Vec<u8>,
    reqs: &[R],
    seq: &mut SeqCounter,
    max_msgs: usize,
    max_bytes: usize,
) -> Result<(u32, usize), EncodeError> {
    buf.clear();
    let first = seq.peek();
    let max_msgs = max_msgs.max(1);
    let mut n = 0;
    while n < reqs.len() && n < max_msgs {
        let last = n + 1 == reqs.len() || n + 1 == max_msgs;
        let mark = buf.len();
        let s = seq.take();
        let Some(req) = reqs.get(n) else { break };
        req.encode(buf, s, if last { NLM_F_ACK } else { 0 })?;
        n += 1;
        if !last && buf.len() >= max_bytes {
            // Re-encode this one as the barrier of a full datagram.
            buf.truncate(mark);
            req.encode(buf, s, NLM_F_ACK)?;
            break;
        }
    }
    Ok((first, n))
}

/// A request/response connection to generic netlink.
///
/// Not for upcalls or notifications: messages whose sequence number matches
/// no outstanding request are dropped here. Use
/// [`super::UpcallSocket`] for those.
#[derive(Debug)]
pub struct Connection {
    sock: GenlSocket,
    seq: SeqCounter,
    families: HashMap<String, FamilyInfo>,
    buf: Vec<u8>,
    max_batch_msgs: usize,
    max_batch_bytes: usize,
}

impl Connection {
    /// Opens a socket.
    pub fn open() -> Result<Self, Error> {
        Ok(Connection {
            sock: GenlSocket::open()?,
            seq: SeqCounter::default(),
            families: HashMap::new(),
            buf: Vec::with_capacity(DEFAULT_BATCH_BYTES + 4096),
            max_batch_msgs: DEFAULT_BATCH_MSGS,
            max_batch_bytes: DEFAULT_BATCH_BYTES,
        })
    }

    /// The socket's port id.
    pub fn pid(&self) -> u32 {
        self.sock.pid()
    }

    /// Caps how many requests and bytes go into one `send`.
    pub fn set_batch_limits(&mut self, max_msgs: usize, max_bytes: usize) {
        self.max_batch_msgs = max_msgs.max(1);
        self.max_batch_bytes = max_bytes.max(4096);
    }

    /// Shrinks or grows the current socket's receive queue (see
    /// [`GenlSocket::set_recv_queue`]); a socket replaced after an overrun
    /// gets the default size again.
    pub fn set_recv_queue(&mut self, bytes: usize) -> Result<(), Error> {
        self.sock.set_recv_queue(bytes)
    }

    /// Resolves a family by name, from the cache or the kernel.
    pub fn family(&mut self, name: &str) -> Result<&FamilyInfo, Error> {
        if !self.families.contains_key(name) {
            let info = match self.request(&GetFamily(name)) {
                Ok(replies) => {
                    let body = replies
                        .first()
                        .ok_or(Error::Protocol("GETFAMILY without a reply"))?;
                    FamilyInfo::parse(body)?
                }
                Err(Error::NotFound { .. }) => {
                    return Err(Error::FamilyNotFound {
                        family: name.to_owned(),
                    });
                }
                Err(e) => return Err(e),
            };
            self.families.insert(name.to_owned(), info);
        }
        self.families
            .get(name)
            .ok_or(Error::Protocol("family cache"))
    }

    /// The family id of an OVS family.
    pub fn family_id<A: OvsFamily>(&mut self) -> Result<u16, Error> {
        Ok(self.family(A::NAME)?.id)
    }

    /// Sends one request with `NLM_F_ACK` and waits for its answer.
    pub fn request<R: Request>(&mut self, req: &R) -> Result<Vec<Vec<u8>>, Error> {
        self.transact(std::slice::from_ref(req))?
            .pop()
            .unwrap_or(Err(Error::Protocol("no outcome")))
    }

    /// Sends many requests, packed into as few datagrams as the batch limits
    /// allow, and returns one outcome per request, in order. The outer error
    /// is a socket failure; kernel errors are per request.
    ///
    /// If the receive queue overflows, the socket is replaced and the requests
    /// of the affected datagram that had no answer yet get [`Error::Overrun`].
    /// Dumps do not belong in a batch: use [`Connection::dump`].
    pub fn transact<R: Request>(&mut self, reqs: &[R]) -> Result<Vec<Outcome>, Error> {
        let mut out = Vec::with_capacity(reqs.len());
        let mut i = 0;
        while i < reqs.len() {
            let rest = reqs.get(i..).unwrap_or_default();
            let (first, n) = pack_window(
                &mut self.buf,
                rest,
                &mut self.seq,
                self.max_batch_msgs,
                self.max_batch_bytes,
            )?;
            out.extend(self.run_window(first, n)?);
            i += n;
        }
        Ok(out)
    }

    fn run_window(&mut self, first: u32, n: usize) -> Result<Vec<Outcome>, Error> {
        self.sock.send(&self.buf)?;
        let mut pending = Pending::new(first, n);
        while !pending.is_finished() {
            let res = match self.sock.recv() {
                Ok(d) => pending.feed(d),
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => {}
                Err(Error::Overrun) => {
                    // Replies were lost: start afresh on a new socket.
                    self.sock = GenlSocket::open()?;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(pending.finish())
    }

    /// Runs a dump (`NLM_F_DUMP` is added) and calls `each` with every reply
    /// body. An error from `each` stops the dump (the rest is drained).
    pub fn dump<R: Request>(
        &mut self,
        req: &R,
        mut each: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.buf.clear();
        let seq = self.seq.take();
        req.encode(&mut self.buf, seq, NLM_F_DUMP)?;
        self.sock.send(&self.buf)?;
        let replies = DumpReplies::new(seq);
        let mut failed: Option<Error> = None;
        loop {
            let datagram = match self.sock.recv() {
                Ok(d) => d,
                Err(Error::Overrun) => {
                    self.sock = GenlSocket::open()?;
                    return Err(Error::Overrun);
                }
                Err(e) => return Err(e),
            };
            let end = replies.feed(datagram, |body| {
                if failed.is_none() {
                    if let Err(e) = each(body) {
                        failed = Some(e);
                    }
                }
            })?;
            if let Some(status) = end {
                return match failed {
                    Some(e) => Err(e),
                    None => status,
                };
            }
        }
    }

    /// Decodes every reply body as a message of family `A`.
    pub fn decode_all<A: OvsFamily>(replies: &[Vec<u8>]) -> Result<Vec<OvsMessage<A>>, Error> {
        replies
            .iter()
            .map(|b| OvsMessage::<A>::decode(b).map_err(Error::from))
            .collect()
    }

    /// Lists every registered generic-netlink family.
    pub fn list_families(&mut self) -> Result<Vec<FamilyInfo>, Error> {
        let mut out = Vec::new();
        self.dump(&DumpFamilies, |body| {
            out.push(FamilyInfo::parse(body)?);
            Ok(())
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    //! These run against the host's generic netlink (the `nlctrl` family is
    //! always there); no openvswitch module is needed.
    use super::*;

    #[test]
    fn resolves_nlctrl_and_caches() {
        let mut c = Connection::open().unwrap();
        assert_ne!(c.pid(), 0);
        let info = c.family("nlctrl").unwrap().clone();
        assert_eq!(info.id, 0x10);
        assert_eq!(info.name, "nlctrl");
        assert!(info.group("notify").is_some());
        assert_eq!(c.family("nlctrl").unwrap(), &info);
    }

    #[test]
    fn missing_family_is_its_own_error() {
        let mut c = Connection::open().unwrap();
        match c.family("weave_nofam") {
            Err(Error::FamilyNotFound { family }) => assert_eq!(family, "weave_nofam"),
            other => panic!("expected FamilyNotFound, got {other:?}"),
        }
    }

    #[test]
    fn extended_ack_text_is_kept() {
        // Family names are limited to 15 bytes: the kernel's attribute policy
        // refuses a longer one with EINVAL and an extended-ack message.
        let mut c = Connection::open().unwrap();
        let err = c
            .request(&GetFamily("a_family_name_too_long_for_genl"))
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
        assert!(err.ext_ack().is_some_and(|m| !m.is_empty()), "{err:?}");
    }

    #[test]
    fn dump_lists_families() {
        let mut c = Connection::open().unwrap();
        let fams = c.list_families().unwrap();
        assert!(fams.iter().any(|f| f.name == "nlctrl" && f.id == 0x10));
        // The connection is still usable after the dump.
        assert_eq!(c.family("nlctrl").unwrap().id, 0x10);
    }

    #[test]
    fn batch_matches_replies_per_request() {
        let mut c = Connection::open().unwrap();
        let names = ["nlctrl", "weave_nope_1", "nlctrl", "weave_nope_2", "nlctrl"];
        let reqs: Vec<_> = names.iter().map(|n| GetFamily(n)).collect();
        let out = c.transact(&reqs).unwrap();
        assert_eq!(out.len(), 5);
        for (name, o) in names.iter().zip(&out) {
            if name.starts_with("weave_nope") {
                assert!(matches!(o, Err(Error::NotFound { .. })), "{name}: {o:?}");
            } else {
                let bodies = o.as_ref().unwrap();
                assert_eq!(FamilyInfo::parse(&bodies[0]).unwrap().id, 0x10);
            }
        }
    }

    #[test]
    fn overrun_is_reported_and_the_connection_recovers() {
        let mut c = Connection::open().unwrap();
        // Each nlctrl reply is over a kilobyte: 500 of them cannot fit a
        // tiny receive queue, so the kernel drops some and flags ENOBUFS.
        c.set_recv_queue(1).unwrap();
        c.set_batch_limits(500, 1 << 20);
        let reqs: Vec<_> = (0..500).map(|_| GetFamily("nlctrl")).collect();
        let out = c.transact(&reqs).unwrap();
        assert_eq!(out.len(), 500);
        let lost = out
            .iter()
            .filter(|o| matches!(o, Err(Error::Overrun)))
            .count();
        assert!(lost > 0, "expected lost replies");
        for o in &out {
            assert!(o.is_ok() || matches!(o, Err(Error::Overrun)), "{o:?}");
        }
        // A fresh socket replaced the overrun one.
        assert_eq!(c.request(&GetFamily("nlctrl")).unwrap().len(), 1);
    }

    /// The sans-IO packing: consecutive sequence numbers, `NLM_F_ACK` on the
    /// last request of each datagram only, byte and count limits.
    #[test]
    fn pack_window_marks_only_the_barrier() {
        use crate::wire::netlink::MessageIter;
        let reqs: Vec<_> = (0..10).map(|_| GetFamily("nlctrl")).collect();
        let mut buf = Vec::new();
        let mut seq = SeqCounter(u32::MAX);
        let (first, n) = pack_window(&mut buf, &reqs, &mut seq, 4, 1 << 20).unwrap();
        assert_eq!((first, n), (u32::MAX, 4));
        let msgs: Vec<_> = MessageIter::new(&buf).map(|m| m.unwrap().header).collect();
        let seqs: Vec<u32> = msgs.iter().map(|h| h.seq).collect();
        // Sequence 0 is skipped when the counter wraps.
        assert_eq!(seqs, vec![u32::MAX, 1, 2, 3]);
        let acks: Vec<bool> = msgs.iter().map(|h| h.flags & NLM_F_ACK != 0).collect();
        assert_eq!(acks, vec![false, false, false, true]);
        // A byte limit smaller than two requests: one per datagram.
        let one = buf.len() / 4;
        let (first, n) = pack_window(&mut buf, &reqs[4..], &mut seq, 100, one).unwrap();
        assert_eq!((first, n), (4, 1));
        let h = MessageIter::new(&buf).next().unwrap().unwrap().header;
        assert!(h.flags & NLM_F_ACK != 0);
        let (_, n) = pack_window(&mut buf, &reqs[..0], &mut seq, 4, 4096).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn large_batches_split_into_several_datagrams() {
        let mut c = Connection::open().unwrap();
        c.set_batch_limits(7, 4096);
        let reqs: Vec<_> = (0..50)
            .map(|i| GetFamily(if i % 5 == 0 { "weave_nope" } else { "nlctrl" }))
            .collect();
        let out = c.transact(&reqs).unwrap();
        assert_eq!(out.len(), 50);
        for (i, o) in out.iter().enumerate() {
            assert_eq!(o.is_err(), i % 5 == 0, "request {i}");
        }
    }
}
