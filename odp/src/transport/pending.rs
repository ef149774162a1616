//! Sans-IO matching of replies to a window of batched requests.
//!
//! A batch is a run of requests with consecutive sequence numbers sent in one
//! datagram. Only the last one (the *barrier*) asks for an acknowledgement;
//! the kernel handles the messages of a datagram in order and answers each
//! failing one with an error even without `NLM_F_ACK`, so when the barrier's
//! acknowledgement arrives every request before it is finished: those without
//! an error succeeded. Data replies (e.g. the datapath a NEW created) are
//! attached to their request by sequence number. Messages with other
//! sequence numbers (stale replies, notifications) are ignored.

use crate::wire::netlink::{MessageIter, Payload};

use super::error::Error;

/// The outcome of one request: its data replies (message bodies after the
/// netlink header) or its error.
pub type Outcome = Result<Vec<Vec<u8>>, Error>;

/// Replies collected for one window of sequence numbers.
#[derive(Debug)]
pub struct Pending {
    first: u32,
    replies: Vec<Vec<Vec<u8>>>,
    errors: Vec<Option<Error>>,
    finished: bool,
}

impl Pending {
    /// A window of `n` requests (at least one) numbered from `first`.
    pub fn new(first: u32, n: usize) -> Self {
        let n = n.max(1);
        Pending {
            first,
            replies: (0..n).map(|_| Vec::new()).collect(),
            errors: (0..n).map(|_| None).collect(),
            finished: false,
        }
    }

    /// Whether the barrier has been answered.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn index(&self, seq: u32) -> Option<usize> {
        let i = seq.wrapping_sub(self.first) as usize;
        (i < self.replies.len()).then_some(i)
    }

    /// Processes one received datagram.
    pub fn feed(&mut self, datagram: &[u8]) -> Result<(), Error> {
        let last = self.replies.len() - 1;
        for msg in MessageIter::new(datagram) {
            let msg = msg?;
            let Some(i) = self.index(msg.header.seq) else {
                continue;
            };
            match msg.payload()? {
                Payload::Data(body) => {
                    if let Some(r) = self.replies.get_mut(i) {
                        r.push(body.to_vec());
                    }
                }
                Payload::Error(e) => {
                    if e.errno != 0 {
                        if let Some(slot) = self.errors.get_mut(i) {
                            *slot = Some(Error::from_errno(e.errno, e.ext_msg));
                        }
                    }
                    if i == last {
                        self.finished = true;
                    }
                }
                Payload::Done(_) | Payload::Noop => {}
                Payload::Overrun => return Err(Error::Overrun),
            }
        }
        Ok(())
    }

    /// The outcomes, in request order. Requests left unanswered when the
    /// window did not finish (e.g. after an overrun) get [`Error::Overrun`].
    pub fn finish(self) -> Vec<Outcome> {
        let finished = self.finished;
        self.replies
            .into_iter()
            .zip(self.errors)
            .map(|(r, e)| match e {
                Some(e) => Err(e),
                None if finished => Ok(r),
                None => Err(Error::Overrun),
            })
            .collect()
    }
}

/// Sans-IO reading of one dump's replies: the data messages carrying the
/// dump's sequence number, up to its `NLMSG_DONE` (or error).
#[derive(Debug, Clone, Copy)]
pub struct DumpReplies {
    seq: u32,
}

impl DumpReplies {
    /// Follows the dump sent with sequence number `seq`.
    pub fn new(seq: u32) -> Self {
        DumpReplies { seq }
    }

    /// Processes one received datagram, calling `each` with every reply body
    /// of the dump. Returns `Some` with the dump's final status once its end
    /// arrived (the rest of the datagram is ignored), `None` while more is to
    /// come. A malformed datagram or a kernel overrun is the outer error.
    pub fn feed(
        &self,
        datagram: &[u8],
        mut each: impl FnMut(&[u8]),
    ) -> Result<Option<Result<(), Error>>, Error> {
        for msg in MessageIter::new(datagram) {
            let msg = msg?;
            if msg.header.seq != self.seq {
                continue;
            }
            match msg.payload()? {
                Payload::Data(body) => each(body),
                Payload::Done(d) | Payload::Error(d) => {
                    return Ok(Some(if d.errno == 0 {
                        Ok(())
                    } else {
                        Err(Error::from_errno(d.errno, d.ext_msg))
                    }));
                }
                Payload::Noop => {}
                Payload::Overrun => return Err(Error::Overrun),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::netlink::{
        NLM_F_ACK_TLVS, NLM_F_CAPPED, NLMSG_DONE, NLMSG_ERROR, NLMSGERR_ATTR_MSG, NlMsgHeader,
    };
    use crate::wire::nla::AttrWriter;

    fn msg(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let h = NlMsgHeader {
            len: (16 + body.len()) as u32,
            kind,
            flags,
            seq,
            pid: 0,
        };
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(body);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn err(seq: u32, code: i32, text: Option<&str>) -> Vec<u8> {
        let mut body = code.to_ne_bytes().to_vec();
        body.extend_from_slice(
            &NlMsgHeader {
                len: 20,
                kind: 0x20,
                flags: 1,
                seq,
                pid: 0,
            }
            .to_bytes(),
        );
        let mut flags = NLM_F_CAPPED;
        if let Some(t) = text {
            AttrWriter::new(&mut body).string(NLMSGERR_ATTR_MSG, t);
            flags |= NLM_F_ACK_TLVS;
        }
        msg(NLMSG_ERROR, flags, seq, &body)
    }

    #[test]
    fn barrier_completes_the_window() {
        let mut p = Pending::new(100, 3);
        let mut dgram = msg(0x20, 0, 100, &[1, 2, 3, 4]);
        dgram.extend(err(101, -libc::EEXIST, Some("flow exists")));
        dgram.extend(msg(0x20, 0, 7, &[9; 4])); // stale: ignored
        p.feed(&dgram).unwrap();
        assert!(!p.is_finished());
        p.feed(&err(102, 0, None)).unwrap();
        assert!(p.is_finished());
        let out = p.finish();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap(), &vec![vec![1, 2, 3, 4]]);
        let e = out[1].as_ref().unwrap_err();
        assert!(matches!(e, Error::Exists { .. }));
        assert_eq!(e.ext_ack(), Some("flow exists"));
        assert!(out[2].as_ref().unwrap().is_empty());
    }

    #[test]
    fn unfinished_window_reports_overrun() {
        let mut p = Pending::new(u32::MAX, 2); // sequence numbers wrap
        p.feed(&err(u32::MAX, -libc::ENOENT, None)).unwrap();
        let out = p.finish();
        assert!(matches!(out[0], Err(Error::NotFound { .. })));
        assert!(matches!(out[1], Err(Error::Overrun)));
    }

    #[test]
    fn dump_replies_stop_at_done() {
        let d = DumpReplies::new(9);
        let mut seen = Vec::new();
        let mut dgram = msg(0x20, 2, 9, &[1; 4]);
        dgram.extend(msg(0x20, 2, 8, &[2; 4])); // another request's: ignored
        dgram.extend(msg(0x20, 2, 9, &[3; 4]));
        assert!(d.feed(&dgram, |b| seen.push(b[0])).unwrap().is_none());
        let mut end = msg(NLMSG_DONE, 2, 9, &0i32.to_ne_bytes());
        end.extend(msg(0x20, 2, 9, &[4; 4])); // after the end: not read
        assert!(matches!(
            d.feed(&end, |b| seen.push(b[0])),
            Ok(Some(Ok(())))
        ));
        assert_eq!(seen, vec![1, 3]);
        let failed = err(9, -libc::ENODEV, None);
        assert!(matches!(
            d.feed(&failed, |_| {}),
            Ok(Some(Err(Error::NoDevice { .. })))
        ));
    }

    #[test]
    fn barrier_error_also_completes() {
        let mut p = Pending::new(0, 2);
        p.feed(&err(1, -libc::EINVAL, None)).unwrap();
        assert!(p.is_finished());
        let out = p.finish();
        assert!(out[0].is_ok());
        assert!(matches!(out[1], Err(Error::Invalid { .. })));
    }
}
