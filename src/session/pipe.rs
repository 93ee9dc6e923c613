//! One direction of a relay: a buffer, the header walker, and what is cleared for forwarding.
//! Forwards bytes after reading only message headers, except the few messages the proxy must
//! see whole; a direction whose writes block stops reading (backpressure).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;

use super::exchange::{Exchange, Expect, Response};
use super::flight::{note_request, observe, Flight, Source, StatementDrop};
use super::relay::{Policy, RelayEnd};
use super::retry::{Hold, HoldStep};
use crate::net::{ReadState, Stream};
use crate::protocol::frame::{whole_run, Passthrough, Step};
use crate::protocol::ProtocolError;

/// Read sizes per direction: clients mostly send small requests; servers stream results.
const CLIENT_READ: usize = 8 * 1024;
const SERVER_READ: usize = 16 * 1024;
/// Free room below which a client buffer grows to `CLIENT_READ` before the next read.
const CLIENT_MIN_SPARE: usize = 256;

/// The least `out` reserves at its first use in a relay.
const OUT_MIN: usize = 256;

/// Reads and writes one pump may do per poll before it yields to the worker's other tasks.
/// Plain TCP writes bypass tokio's cooperative budget (see `net::stream`), so a direction that
/// could always read and write (a long COPY on fast peers) must stop by itself.
const PUMP_BUDGET: u32 = 64;

/// One direction: a buffer, the header walker, and how much of the buffer is ready to write.
///
/// Laid out in order (`repr(C)`) on a cache line of its own: what every wake-up reads (the
/// states `quiet` checks, `ready`, both buffers' pointers and lengths) fills the first line,
/// what a message's header needs (`pass`) starts the second. Field order decides how many
/// lines a relay's wake-up touches, and with many sessions each one is a cache miss.
#[derive(Debug)]
#[repr(C, align(64))]
pub(super) struct Pipe {
    /// What the source's reads know of its readiness (see [`Stream::poll_recv`]).
    read_state: ReadState,
    /// End the direction this way once `ready` bytes are written (Terminate, a release point).
    pub(super) stop: Option<PipeStop>,
    /// Written bytes that may still sit in a TLS buffer (plain TCP has none: its flush is a
    /// no-op, not worth a call per write).
    need_flush: bool,
    pub(super) source: Source,
    /// Bytes at the front of `buf` cleared for forwarding.
    pub(super) ready: usize,
    pub(super) buf: BytesMut,
    /// Bytes to forward before anything in `buf`, used once a message is rewritten, dropped or
    /// answered by the proxy; while it holds bytes, `ready` is 0 and cleared messages are copied
    /// here to keep their order. Allocated only when needed.
    pub(super) out: BytesMut,
    pub(super) pass: Passthrough,
    max_message_size: usize,
    /// Server messages held back for a possible 25006 retry (`Policy::retry_read_only`).
    pub(super) hold: Option<Hold>,
}

/// How a direction ends once its cleared bytes are written: a byte, where a [`RelayEnd`] (which
/// can carry an error) would take 48 in every pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PipeStop {
    ClientTerminated,
    TransactionDone,
    ReadOnlyRetry,
}

impl PipeStop {
    fn end(self) -> RelayEnd {
        match self {
            PipeStop::ClientTerminated => RelayEnd::ClientTerminated,
            PipeStop::TransactionDone => RelayEnd::TransactionDone,
            PipeStop::ReadOnlyRetry => RelayEnd::ReadOnlyRetry,
        }
    }
}

impl Pipe {
    pub(super) fn new(source: Source, buf: BytesMut, max_message_size: usize) -> Pipe {
        Pipe {
            source,
            buf,
            pass: Passthrough::default(),
            ready: 0,
            out: BytesMut::new(),
            stop: None,
            need_flush: false,
            read_state: ReadState::Unknown,
            max_message_size,
            hold: None,
        }
    }

    /// Room below which the buffer grows before a read. Small on the client side: a request
    /// usually fits in the buffer the idle client read it into, which then need not grow (and be
    /// copied) at every transaction.
    fn min_spare(&self) -> usize {
        match self.source {
            Source::Client => CLIENT_MIN_SPARE,
            Source::Server => SERVER_READ / 4,
        }
    }

    /// How much a read asks for at least.
    fn read_size(&self) -> usize {
        match self.source {
            Source::Client => CLIENT_READ,
            Source::Server => SERVER_READ,
        }
    }

    pub(super) fn gone(&self) -> RelayEnd {
        match self.source {
            Source::Client => RelayEnd::ClientGone,
            Source::Server => RelayEnd::ServerGone,
        }
    }

    fn peer_gone(&self) -> RelayEnd {
        match self.source {
            Source::Client => RelayEnd::ServerGone,
            Source::Server => RelayEnd::ClientGone,
        }
    }

    fn protocol_error(&self, e: ProtocolError) -> RelayEnd {
        match self.source {
            Source::Client => RelayEnd::ClientProtocol(e),
            Source::Server => RelayEnd::ServerProtocol(e),
        }
    }

    /// Whether stopping here leaves the server connection out of step: a message only partly
    /// forwarded or written, or (reading from the server) bytes read but not delivered, which would
    /// otherwise reach the next client as the tail of a message.
    pub(super) fn torn(&self) -> bool {
        let undelivered = !self.out.is_empty()
            || match self.source {
                Source::Client => self.ready > 0,
                Source::Server => !self.buf.is_empty(),
            };
        self.pass.in_message() || undelivered
    }

    /// Whether this direction has nothing to do at this wake-up: its waker is registered,
    /// nothing is buffered to write or flush, what it holds was scanned (it stopped there at its
    /// last poll), and its source has no new bytes (one readiness check). A relay's task is woken
    /// for either direction and polls both; the quiet one is skipped without a pump call. The
    /// statement exchange can give the server direction bytes to write at any time, so a relay
    /// with one is never quiet here.
    #[inline(always)]
    pub(super) fn quiet(&self, src: &Stream, exchange: &Option<Exchange<'_>>) -> bool {
        self.read_state == ReadState::Armed
            && self.ready == 0
            && self.out.is_empty()
            && self.stop.is_none()
            && !self.need_flush
            && exchange.is_none()
            && !src.may_read()
    }

    /// Moves data from `src` to `dst` until one of them would block (Pending) or the direction ends.
    pub(super) fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut Stream,
        dst: &mut Stream,
        flight: &mut Flight<'_>,
        policy: Policy,
        exchange: &mut Option<Exchange<'_>>,
    ) -> Poll<RelayEnd> {
        let mut budget = PUMP_BUDGET;
        loop {
            budget -= 1;
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            while !self.out.is_empty() {
                match ready!(Pin::new(&mut *dst).poll_write(cx, &self.out)) {
                    Ok(0) | Err(_) => return Poll::Ready(self.peer_gone()),
                    Ok(n) => {
                        self.out.advance(n);
                        self.need_flush = dst.is_tls();
                        flight.wrote(self.source, n);
                    }
                }
            }
            while self.ready > 0 {
                match ready!(Pin::new(&mut *dst).poll_write(cx, &self.buf[..self.ready])) {
                    Ok(0) | Err(_) => return Poll::Ready(self.peer_gone()),
                    Ok(n) => {
                        self.buf.advance(n);
                        self.ready -= n;
                        self.need_flush = dst.is_tls();
                        flight.wrote(self.source, n);
                    }
                }
            }
            if let Some(stop) = self.stop.take() {
                if self.need_flush {
                    if ready!(Pin::new(&mut *dst).poll_flush(cx)).is_err() {
                        return Poll::Ready(self.peer_gone());
                    }
                    self.need_flush = false;
                }
                return Poll::Ready(stop.end());
            }
            if let Err(e) = self.scan(flight, policy, exchange) {
                return Poll::Ready(self.protocol_error(e));
            }
            if self.ready > 0 || !self.out.is_empty() || self.stop.is_some() {
                continue;
            }
            rewind(&mut self.buf);
            if self.buf.capacity() - self.buf.len() < self.min_spare() {
                self.buf.reserve(self.read_size());
            }
            match src.poll_recv(cx, &mut self.buf, &mut self.read_state) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(self.gone()),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    if self.need_flush {
                        if ready!(Pin::new(&mut *dst).poll_flush(cx)).is_err() {
                            return Poll::Ready(self.peer_gone());
                        }
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Clears buffered bytes for forwarding, message by message, looking at headers only, and at
    /// whole frames for the few messages the proxy must understand.
    fn scan(
        &mut self,
        flight: &mut Flight<'_>,
        policy: Policy,
        exchange: &mut Option<Exchange<'_>>,
    ) -> Result<(), ProtocolError> {
        while self.stop.is_none() {
            if let Some(exchange) = exchange.as_mut() {
                if self.source == Source::Server && exchange.owes() && !self.pass.in_message() {
                    self.release_hold();
                    self.divert();
                    exchange.owed(&mut self.out);
                }
            }
            if self.source == Source::Server
                && exchange.is_none()
                && self.hold.is_none()
                && !self.pass.in_message()
            {
                // Rows, descriptions, completions, notices: forwarded unread, all at once.
                let run = whole_run(&self.buf[self.ready..], self.max_message_size, |tag| {
                    matches!(tag, b'Z' | b'S' | b'E')
                });
                self.clear_whole(run);
            }
            let (header, available) = match self
                .pass
                .step(&self.buf[self.ready..], self.max_message_size)?
            {
                Step::NeedMore => return Ok(()),
                Step::Body { n } => {
                    self.clear(n);
                    continue;
                }
                Step::Message { header, available } => (header, available),
            };
            let frame_len = header.frame_len();
            let rewriting = exchange.is_some();
            let needs_whole = match self.source {
                Source::Client => {
                    (policy.transaction_pooling
                        && matches!(header.tag, b'P' | b'Q' | b'B' | b'D' | b'C'))
                        || (policy.log_queries && matches!(header.tag, b'P' | b'Q'))
                }
                Source::Server => {
                    matches!(header.tag, b'Z' | b'S' | b'E')
                        || (rewriting && matches!(header.tag, b'1' | b'3'))
                        || self.hold.is_some()
                }
            };
            if needs_whole && available < frame_len {
                self.buf.reserve(frame_len - available);
                return Ok(());
            }
            let frame = &self.buf[self.ready..self.ready + available];
            let body = if needs_whole { &frame[5..] } else { &[][..] };
            match self.source {
                Source::Client => {
                    if header.tag == b'X' {
                        // Terminate ends the session; it is not forwarded.
                        self.stop = Some(PipeStop::ClientTerminated);
                        return Ok(());
                    }
                    let dropped = note_request(header.tag, body, flight, policy);
                    if let Some(exchange) = exchange.as_mut() {
                        if self.client_request(exchange, available, dropped, flight) {
                            continue;
                        }
                    }
                }
                Source::Server => {
                    if let Some(exchange) = exchange.as_mut() {
                        if exchange.response(header.tag) == Response::Drop {
                            self.divert();
                            self.drop_message(frame_len);
                            continue;
                        }
                    }
                    if self.hold.is_some() {
                        if self.held(header.tag, frame_len, flight)? {
                            continue;
                        }
                        // Held messages went out ahead: the message moved in the buffer.
                        let frame = &self.buf[self.ready..self.ready + available];
                        if observe(header.tag, &frame[5..], flight)?
                            && (policy.transaction_pooling || flight.draining)
                            && !owed(exchange)
                        {
                            self.stop = Some(PipeStop::TransactionDone);
                        }
                        self.clear(available);
                        continue;
                    }
                    if !needs_whole {
                        // Rows, descriptions, completions: nothing to record.
                        self.clear(available);
                        continue;
                    }
                    let owed = exchange.as_ref().is_some_and(|e| !e.expected.is_empty());
                    if observe(header.tag, body, flight)?
                        && (policy.transaction_pooling || flight.draining)
                        && !owed
                    {
                        self.stop = Some(PipeStop::TransactionDone);
                    }
                }
            }
            self.clear(available);
        }
        Ok(())
    }

    /// Hands a client message at the scan position to the statement exchange. True if the
    /// exchange consumed it (rewritten, answered by the proxy); false to forward it as is.
    fn client_request(
        &mut self,
        exchange: &mut Exchange<'_>,
        available: usize,
        dropped: Option<StatementDrop>,
        flight: &mut Flight<'_>,
    ) -> bool {
        let frame = &self.buf[self.ready..self.ready + available];
        if let Some(dropped) = dropped {
            exchange.expected.push_back(Expect::UntilReady);
            let name = match dropped {
                StatementDrop::All => {
                    exchange.client.clear();
                    flight.statements_dropped = true;
                    return false;
                }
                StatementDrop::Named(name) => name,
            };
            let Some((sql, all)) = exchange.deallocate(name.as_bytes()) else {
                return false;
            };
            flight.statements_dropped |= all;
            self.divert();
            crate::protocol::frontend::encode_query(&sql, &mut self.out);
            self.drop_message(available);
            return true;
        }
        if !exchange.intercepts(frame) {
            exchange.request(frame, &mut self.out);
            return false;
        }
        self.divert();
        let frame = &self.buf[..available];
        if exchange.request(frame, &mut self.out) == super::exchange::Request::Forward {
            self.out.extend_from_slice(frame);
        }
        if flight.pinned.is_none() {
            flight.pinned = exchange.pinned;
        }
        self.drop_message(available);
        true
    }

    /// Under `Policy::retry_read_only`, holds or releases the whole server message at the scan
    /// position. True if it was consumed (held, or dropped for a retry).
    fn held(
        &mut self,
        tag: u8,
        frame_len: usize,
        flight: &mut Flight,
    ) -> Result<bool, ProtocolError> {
        let Some(mut hold) = self.hold.take() else {
            return Ok(false);
        };
        let frame = &self.buf[self.ready..self.ready + frame_len];
        let body = &frame[5..];
        match hold.step(tag, body) {
            HoldStep::Keep => {
                observe(tag, body, flight)?;
                hold.buf.extend_from_slice(frame);
                self.hold = Some(hold);
            }
            HoldStep::Retry if flight.client_messages == 1 => {
                observe(tag, body, flight)?;
                self.stop = Some(PipeStop::ReadOnlyRetry);
            }
            HoldStep::Retry | HoldStep::Release => {
                self.hold = Some(hold);
                self.release_hold();
                return Ok(false);
            }
        }
        self.divert();
        self.drop_message(frame_len);
        Ok(true)
    }

    /// Stops holding: what was held goes out first.
    fn release_hold(&mut self) {
        if let Some(hold) = self.hold.take() {
            self.divert();
            self.out.extend_from_slice(&hold.buf);
        }
    }

    /// Clears the next `n` scanned bytes for forwarding, in place or (when earlier output was
    /// rewritten) after it.
    #[inline(always)]
    fn clear(&mut self, n: usize) {
        self.clear_whole(n);
        self.pass.advance(n);
    }

    /// Clears the next `n` scanned bytes, whole messages that the passthrough never stepped
    /// through (it stays at their end, a message boundary); [`Pipe::clear`] also moves it on.
    #[inline(always)]
    fn clear_whole(&mut self, n: usize) {
        if self.out.is_empty() {
            self.ready += n;
        } else {
            self.out.extend_from_slice(&self.buf[..n]);
            self.buf.advance(n);
        }
    }

    /// Gives `out` room at its first use in a relay for everything buffered, so rewriting a
    /// pipeline allocates once instead of growing message by message.
    fn prepare_out(&mut self) {
        if self.out.capacity() == 0 {
            self.out.reserve(self.buf.len().max(OUT_MIN));
        }
    }

    /// Moves the bytes cleared in place to `out`, so that something can be inserted after them.
    fn divert(&mut self) {
        self.prepare_out();
        if self.ready > 0 {
            self.out.extend_from_slice(&self.buf[..self.ready]);
            self.buf.advance(self.ready);
            self.ready = 0;
        }
    }

    /// Consumes the whole message at the scan position (after [`Pipe::divert`]) without
    /// forwarding it.
    fn drop_message(&mut self, frame_len: usize) {
        debug_assert_eq!(self.ready, 0);
        self.pass.advance(frame_len);
        self.buf.advance(frame_len);
    }
}

/// Whether the statement exchange still owes the client responses.
fn owed(exchange: &Option<Exchange<'_>>) -> bool {
    exchange.as_ref().is_some_and(|e| !e.expected.is_empty())
}

/// Moves an emptied buffer's start back to the front of its allocation, without copying or
/// allocating (a no-op when it is there already, or when another handle shares the allocation).
/// Each exchange then reads into the same few cache lines; a buffer that only advanced would
/// sweep its whole allocation, a cache line or more per transaction, and with many sessions
/// those lines have left the CPU's caches by the time the sweep comes back to them.
#[inline]
fn rewind(buf: &mut BytesMut) {
    if buf.is_empty() {
        // Asking for one byte more than the room ahead succeeds only by reclaiming the room
        // behind, which is all of it; `false` (nothing behind) leaves the buffer as it is.
        let _ = buf.try_reclaim(buf.capacity() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewind_restarts_an_emptied_buffer_at_the_front() {
        let mut buf = BytesMut::with_capacity(1024);
        let full = buf.capacity();
        let base = buf.as_ptr();
        buf.extend_from_slice(&[1; 100]);
        buf.advance(100);
        assert_eq!(buf.capacity(), full - 100);
        rewind(&mut buf);
        assert_eq!((buf.as_ptr(), buf.capacity()), (base, full));
        rewind(&mut buf);
        assert_eq!((buf.as_ptr(), buf.capacity()), (base, full));
    }

    #[test]
    fn rewind_keeps_unread_bytes_and_shared_allocations() {
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(b"abcdef");
        buf.advance(3);
        rewind(&mut buf);
        assert_eq!(&buf[..], b"def");
        // A split-off part still points into the allocation: nothing is reclaimed under it.
        let head = buf.split_to(3);
        assert!(buf.is_empty());
        let before = buf.as_ptr();
        rewind(&mut buf);
        assert_eq!(buf.as_ptr(), before, "reclaimed while shared");
        assert_eq!(&head[..], b"def");
        drop(head);
        // Once the allocation is this handle's alone again, it goes back to the front.
        rewind(&mut buf);
        assert_eq!(buf.capacity(), 1024);
    }
}
