//! The transport for tokio: the same framing, batching, sequence matching and
//! error mapping as [`Connection`](super::Connection) (through the sans-IO
//! [`pack_window`], [`Pending`] and [`DumpReplies`]), over a non-blocking
//! socket registered with tokio's reactor through [`AsyncFd`].
//!
//! * [`AsyncConnection`]: requests, batches and dumps; a dump is a
//!   [`Dump`] stream;
//! * [`Notifications`]: a stream of the kernel's unsolicited messages of one
//!   family (upcalls, or a multicast group's notifications).
//!
//! Sockets must be opened inside a tokio runtime with I/O enabled.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_core::Stream;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::wire::ctrl::FamilyInfo;
use crate::wire::netlink::NLM_F_DUMP;
use crate::wire::ovs::{OvsFamily, OvsMessage};

use super::conn::{
    DEFAULT_BATCH_BYTES, DEFAULT_BATCH_MSGS, GetFamily, Request, SeqCounter, pack_window,
};
use super::error::Error;
use super::pending::{DumpReplies, Outcome, Pending};
use super::socket::GenlSocket;
use super::upcall::family_bodies;

/// Opens a non-blocking socket registered with the current tokio runtime.
fn async_socket() -> Result<AsyncFd<GenlSocket>, Error> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::NoRuntime);
    }
    let sock = GenlSocket::open()?;
    sock.set_nonblocking(true)?;
    // SAFETY: the GenlSocket owns its descriptor (closed only when the
    // socket is dropped, which the AsyncFd does last) and `as_raw_fd`
    // always returns that same descriptor.
    let fd = unsafe { AsyncFd::register(sock) };
    fd.map_err(|e| Error::Io(e.into_parts().1))
}

/// Splits a socket result for `AsyncFd`: I/O errors (would-block among them,
/// which makes tokio wait for readiness again) go outside, everything else
/// inside.
fn split<T>(r: Result<T, Error>) -> io::Result<Result<T, Error>> {
    match r {
        Err(Error::Io(e)) => Err(e),
        other => Ok(other),
    }
}

/// A request/response connection to generic netlink for tokio. Methods take
/// `&mut self`: one request, batch or dump at a time (wrap it in a mutex to
/// share it between tasks, or open one per task: sockets are cheap).
#[derive(Debug)]
pub struct AsyncConnection {
    sock: AsyncFd<GenlSocket>,
    seq: SeqCounter,
    families: HashMap<String, FamilyInfo>,
    buf: Vec<u8>,
    max_batch_msgs: usize,
    max_batch_bytes: usize,
    /// The dump in progress, until its stream sees the end. The kernel
    /// allows one dump per socket at a time (a second one is `EBUSY`), so
    /// the rest of a dump whose stream was dropped early is read (and
    /// ignored) before the next dump starts.
    abandoned: Option<DumpReplies>,
}

/// Notes the end of an abandoned dump if `datagram` carries it.
fn see_abandoned(abandoned: &mut Option<DumpReplies>, datagram: &[u8]) {
    if let Some(a) = abandoned {
        if !matches!(a.feed(datagram, |_| {}), Ok(None)) {
            *abandoned = None;
        }
    }
}

impl AsyncConnection {
    /// Opens a socket. Outside a tokio runtime this is [`Error::NoRuntime`].
    pub fn open() -> Result<Self, Error> {
        Ok(AsyncConnection {
            sock: async_socket()?,
            seq: SeqCounter::default(),
            families: HashMap::new(),
            buf: Vec::with_capacity(DEFAULT_BATCH_BYTES + 4096),
            max_batch_msgs: DEFAULT_BATCH_MSGS,
            max_batch_bytes: DEFAULT_BATCH_BYTES,
            abandoned: None,
        })
    }

    /// The socket's port id.
    pub fn pid(&self) -> u32 {
        self.sock.get_ref().pid()
    }

    /// Caps how many requests and bytes go into one `send`.
    pub fn set_batch_limits(&mut self, max_msgs: usize, max_bytes: usize) {
        self.max_batch_msgs = max_msgs.max(1);
        self.max_batch_bytes = max_bytes.max(4096);
    }

    /// Sets the current socket's receive queue size (see
    /// [`GenlSocket::set_recv_queue`]).
    pub fn set_recv_queue(&mut self, bytes: usize) -> Result<(), Error> {
        self.sock.get_ref().set_recv_queue(bytes)
    }

    /// Resolves a family by name, from the cache or the kernel.
    pub async fn family(&mut self, name: &str) -> Result<&FamilyInfo, Error> {
        if !self.families.contains_key(name) {
            let info = match self.request(&GetFamily(name)).await {
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
    pub async fn family_id<A: OvsFamily>(&mut self) -> Result<u16, Error> {
        Ok(self.family(A::NAME).await?.id)
    }

    /// Sends one request with `NLM_F_ACK` and waits for its answer.
    pub async fn request<R: Request>(&mut self, req: &R) -> Result<Vec<Vec<u8>>, Error> {
        self.transact(std::slice::from_ref(req))
            .await?
            .pop()
            .unwrap_or(Err(Error::Protocol("no outcome")))
    }

    /// Sends many requests packed into as few datagrams as the batch limits
    /// allow and returns one outcome per request, in order (see
    /// [`Connection::transact`](super::Connection::transact)).
    pub async fn transact<R: Request>(&mut self, reqs: &[R]) -> Result<Vec<Outcome>, Error> {
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
            out.extend(self.run_window(first, n).await?);
            i += n;
        }
        Ok(out)
    }

    async fn send_buf(&mut self) -> Result<(), Error> {
        let buf = &self.buf;
        self.sock
            .async_io(Interest::WRITABLE, |s| split(s.send(buf)))
            .await?
    }

    async fn run_window(&mut self, first: u32, n: usize) -> Result<Vec<Outcome>, Error> {
        self.send_buf().await?;
        let mut pending = Pending::new(first, n);
        let abandoned = &mut self.abandoned;
        while !pending.is_finished() {
            let res = self
                .sock
                .async_io_mut(Interest::READABLE, |s| {
                    split(s.recv().and_then(|d| {
                        see_abandoned(abandoned, d);
                        pending.feed(d)
                    }))
                })
                .await?;
            match res {
                Ok(()) => {}
                Err(Error::Overrun) => {
                    // Replies were lost: start afresh on a new socket.
                    self.sock = async_socket()?;
                    self.abandoned = None;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(pending.finish())
    }

    /// Starts a dump (`NLM_F_DUMP` is added) and returns its replies as a
    /// stream, each body decoded by `decode`.
    pub async fn dump<R: Request, T>(
        &mut self,
        req: &R,
        decode: fn(&[u8]) -> Result<T, Error>,
    ) -> Result<Dump<'_, T>, Error> {
        self.finish_abandoned().await?;
        self.buf.clear();
        let seq = self.seq.take();
        req.encode(&mut self.buf, seq, NLM_F_DUMP)?;
        self.send_buf().await?;
        let replies = DumpReplies::new(seq);
        self.abandoned = Some(replies);
        Ok(Dump {
            conn: self,
            replies,
            queue: VecDeque::new(),
            done: false,
            decode,
        })
    }

    /// Decodes every reply body as a message of family `A`.
    pub fn decode_all<A: OvsFamily>(replies: &[Vec<u8>]) -> Result<Vec<OvsMessage<A>>, Error> {
        super::Connection::decode_all(replies)
    }

    /// Reads the rest of an abandoned dump, if any.
    async fn finish_abandoned(&mut self) -> Result<(), Error> {
        while self.abandoned.is_some() {
            let abandoned = &mut self.abandoned;
            let res = self
                .sock
                .async_io_mut(Interest::READABLE, |s| {
                    split(s.recv().map(|d| see_abandoned(abandoned, d)))
                })
                .await?;
            if let Err(e) = res {
                if matches!(e, Error::Overrun) {
                    self.sock = async_socket()?;
                }
                self.abandoned = None;
                if !matches!(e, Error::Overrun) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// What one receive did to a stream.
enum Step {
    /// Nothing to report yet (would-block, or a datagram of other messages).
    Again,
    /// The stream ends, after what was queued.
    End,
    /// An error to yield; the stream ends after it.
    Fail(Error),
    /// The socket lost messages and must be replaced (dumps).
    Overrun,
}

/// The replies of one dump, as a [`Stream`] of decoded items. It borrows the
/// connection; dropping it early is fine (later requests ignore the rest,
/// and the next dump first reads it to its end).
pub struct Dump<'a, T> {
    conn: &'a mut AsyncConnection,
    replies: DumpReplies,
    queue: VecDeque<Result<T, Error>>,
    done: bool,
    decode: fn(&[u8]) -> Result<T, Error>,
}

impl<T> std::fmt::Debug for Dump<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dump")
            .field("queued", &self.queue.len())
            .field("done", &self.done)
            .finish()
    }
}

// Nothing in a Dump is pinned structurally.
impl<T> Unpin for Dump<'_, T> {}

impl<T> Dump<'_, T> {
    /// The next item, or `None` at the end of the dump.
    pub async fn next(&mut self) -> Option<Result<T, Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Collects the rest of the dump; the first error ends it.
    pub async fn collect(mut self) -> Result<Vec<T>, Error> {
        let mut out = Vec::new();
        while let Some(item) = self.next().await {
            out.push(item?);
        }
        Ok(out)
    }
}

impl<T> Stream for Dump<'_, T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.queue.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let step = {
                let mut guard = match ready!(this.conn.sock.poll_read_ready_mut(cx)) {
                    Ok(g) => g,
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(Error::Io(e))));
                    }
                };
                let (replies, decode, queue) = (this.replies, this.decode, &mut this.queue);
                let got = guard.try_io(|s| {
                    split(
                        s.get_mut()
                            .recv()
                            .and_then(|d| replies.feed(d, |b| queue.push_back(decode(b)))),
                    )
                });
                match got {
                    Err(_would_block) => Step::Again,
                    Ok(Ok(Ok(None))) => Step::Again,
                    Ok(Ok(Ok(Some(Ok(()))))) => Step::End,
                    Ok(Ok(Ok(Some(Err(e))))) => Step::Fail(e),
                    Ok(Ok(Err(Error::Overrun))) => Step::Overrun,
                    Ok(Ok(Err(e))) => Step::Fail(e),
                    Ok(Err(e)) => Step::Fail(Error::Io(e)),
                }
            };
            if !matches!(step, Step::Again) {
                // Over (or failed): nothing of it is left to read.
                this.conn.abandoned = None;
            }
            match step {
                Step::Again => {}
                Step::End => this.done = true,
                Step::Fail(e) => {
                    this.done = true;
                    this.queue.push_back(Err(e));
                }
                Step::Overrun => {
                    this.done = true;
                    let e = match async_socket() {
                        Ok(s) => {
                            this.conn.sock = s;
                            Error::Overrun
                        }
                        Err(e) => e,
                    };
                    this.queue.push_back(Err(e));
                }
            }
        }
    }
}

/// A [`Stream`] of the kernel's unsolicited messages of one family on their
/// own socket: upcalls sent to its [`pid`](Notifications::pid), or
/// notifications of a multicast group it [joined](Notifications::join).
/// Lost messages (a full receive queue) are yielded as [`Error::Overrun`] and
/// the stream goes on; it never ends by itself.
pub struct Notifications<T> {
    sock: AsyncFd<GenlSocket>,
    family: u16,
    queue: VecDeque<Result<T, Error>>,
    decode: fn(&[u8]) -> Result<T, Error>,
}

impl<T> std::fmt::Debug for Notifications<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications")
            .field("pid", &self.pid())
            .field("family", &self.family)
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl<T> Unpin for Notifications<T> {}

impl<T> Notifications<T> {
    /// Opens a socket for messages of family id `family`, each body decoded
    /// by `decode`.
    pub fn open(family: u16, decode: fn(&[u8]) -> Result<T, Error>) -> Result<Self, Error> {
        Ok(Notifications {
            sock: async_socket()?,
            family,
            queue: VecDeque::new(),
            decode,
        })
    }

    /// The port id to hand to the kernel (vport or per-CPU upcall PIDs).
    pub fn pid(&self) -> u32 {
        self.sock.get_ref().pid()
    }

    /// Joins a multicast group.
    pub fn join(&self, group: u32) -> Result<(), Error> {
        self.sock.get_ref().add_membership(group)
    }

    /// Sets the socket's receive queue size (see
    /// [`GenlSocket::set_recv_queue`]).
    pub fn set_recv_queue(&self, bytes: usize) -> Result<(), Error> {
        self.sock.get_ref().set_recv_queue(bytes)
    }

    /// The next message (never `None`).
    pub async fn next(&mut self) -> Option<Result<T, Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl<T> Stream for Notifications<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.queue.pop_front() {
                return Poll::Ready(Some(item));
            }
            let mut guard = match ready!(this.sock.poll_read_ready_mut(cx)) {
                Ok(g) => g,
                Err(e) => return Poll::Ready(Some(Err(Error::Io(e)))),
            };
            let (family, decode, queue) = (this.family, this.decode, &mut this.queue);
            let got = guard.try_io(|s| {
                split(
                    s.get_mut()
                        .recv()
                        .and_then(|d| family_bodies(d, family, |b| queue.push_back(decode(b)))),
                )
            });
            match got {
                Err(_) | Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => queue.push_back(Err(e)),
                Ok(Err(e)) => queue.push_back(Err(Error::Io(e))),
            }
        }
    }
}
