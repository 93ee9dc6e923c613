//! The request/response exchange under transaction pooling, for named prepared statements: client
//! statement names become proxy-wide names; a statement the server lacks is prepared just before
//! the message that needs it (its ParseComplete swallowed); a Parse or Close the server need not
//! see is answered by the proxy, in order. To place and drop responses exactly, every request sent
//! is matched with the responses it gets, and after an error the proxy drops its pending work until
//! Sync exactly as the server does.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};

use super::statements::{ClientStatements, Statement, StatementCache};
use crate::metrics::PoolMetrics;
use crate::server::PreparedSet;

/// A response (or group of responses) the client is owed for one request, in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// ParseComplete; `prepared` is the statement this Parse prepares under a proxy-wide name.
    Parse {
        prepared: Option<u64>,
    },
    Bind,
    /// ParameterDescription, then RowDescription or NoData.
    DescribeStatement,
    /// RowDescription or NoData.
    DescribePortal,
    Close,
    /// Rows, then CommandComplete, EmptyQueryResponse or PortalSuspended (or COPY in between).
    Execute,
    /// Sync, Query, FunctionCall: everything up to ReadyForQuery.
    UntilReady,
    /// A response to a message the proxy injected: dropped, never shown to the client.
    Swallow {
        tag: u8,
        prepared: Option<u64>,
    },
    /// A response the proxy owes in place of the server (the request was not sent).
    Synthetic(u8),
}

/// What to do with a client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Send it as it is.
    Forward,
    /// Do not send it; send what was written to `out` instead (possibly nothing).
    Replaced,
}

/// What to do with a server message.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    Forward,
    /// A response to the proxy's own request: drop it.
    Drop,
}

/// The state one relay works on: the proxy-wide cache, this client's names, the server
/// connection's prepared set and the responses owed.
pub struct Exchange<'a> {
    pub cache: &'a StatementCache,
    pub client: &'a mut ClientStatements,
    pub server: &'a mut PreparedSet,
    pub expected: &'a mut VecDeque<Expect>,
    /// Set when the client runs a named statement that may change settings.
    pub settings_changed: bool,
    /// Set when the client runs a named statement that creates session state (and why).
    pub pinned: Option<&'static str>,
    /// Counts prepared-statement cache hits (the server had it), misses (prepared on demand) and
    /// evictions.
    pub metrics: &'a PoolMetrics,
}

/// The bytes of a NUL-terminated string at the front of `bytes` (without the NUL), if any.
fn cstr(bytes: &[u8]) -> Option<&[u8]> {
    bytes.iter().position(|b| *b == 0).map(|end| &bytes[..end])
}

impl Exchange<'_> {
    /// Looks at one whole client message (`frame`, header included) and records the responses it
    /// is owed. Unreadable bodies are forwarded untouched: the server will reject them.
    pub fn request(&mut self, frame: &[u8], out: &mut BytesMut) -> Request {
        let Some((&tag, rest)) = frame.split_first() else {
            return Request::Forward;
        };
        let body = rest.get(4..).unwrap_or_default();
        let handled = match tag {
            b'P' => self.parse(body, out),
            b'B' => self.bind(body, out),
            b'D' => self.describe(body, out),
            b'C' => self.close(body),
            _ => None,
        };
        if let Some(request) = handled {
            return request;
        }
        let expect = match tag {
            b'P' => Expect::Parse { prepared: None },
            b'B' => Expect::Bind,
            b'D' if body.first() == Some(&b'S') => Expect::DescribeStatement,
            b'D' => Expect::DescribePortal,
            b'C' => Expect::Close,
            b'E' => Expect::Execute,
            b'S' | b'Q' | b'F' => Expect::UntilReady,
            _ => return Request::Forward,
        };
        self.expected.push_back(expect);
        Request::Forward
    }

    /// Whether [`Exchange::request`] may replace this client message (it names a statement), so
    /// the caller must be ready to insert bytes.
    pub fn intercepts(&self, frame: &[u8]) -> bool {
        let body = frame.get(5..).unwrap_or_default();
        match frame.first() {
            Some(b'P') => body.first().is_some_and(|b| *b != 0),
            Some(b'B') => cstr(body)
                .and_then(|portal| body.get(portal.len() + 1))
                .is_some_and(|b| *b != 0),
            Some(b'D' | b'C') => {
                body.first() == Some(&b'S') && body.get(1).is_some_and(|b| *b != 0)
            }
            _ => false,
        }
    }

    /// `DEALLOCATE name` of a client statement: drops it from the client's view and returns the
    /// query to send instead, and whether that query drops every statement of the server (when the
    /// server does not have this one). `None` if the client has no such statement.
    pub fn deallocate(&mut self, name: &[u8]) -> Option<(String, bool)> {
        let statement = self.client.remove(name)?;
        if self.server.touch(statement.id) {
            self.server.remove(statement.id);
            Some((format!("DEALLOCATE {}", statement.name()), false))
        } else {
            self.server.clear();
            Some(("DEALLOCATE ALL".to_string(), true))
        }
    }

    /// Parse of a named statement: remember the client's name; prepare the statement only if this
    /// server lacks it, else answer ParseComplete ourselves.
    fn parse(&mut self, body: &[u8], out: &mut BytesMut) -> Option<Request> {
        let name = cstr(body).filter(|n| !n.is_empty())?;
        let rest = &body[name.len() + 1..];
        let statement = self.cache.get_or_insert(rest);
        self.client.insert(name, statement.clone());
        if self.server.touch(statement.id) {
            self.metrics.prepared_cache_hits.inc();
            self.expected.push_back(Expect::Synthetic(b'1'));
        } else {
            self.prepare(&statement, out, false);
        }
        Some(Request::Replaced)
    }

    fn bind(&mut self, body: &[u8], out: &mut BytesMut) -> Option<Request> {
        let portal = cstr(body)?;
        let after = &body[portal.len() + 1..];
        let name = cstr(after).filter(|n| !n.is_empty())?;
        let statement = self.client.get(name)?.clone();
        self.settings_changed |= statement.changes_settings;
        self.pinned = self.pinned.or(statement.pin);
        let tail = &after[name.len() + 1..];
        self.ensure_prepared(&statement, out);
        let len = 4 + portal.len() + 1 + statement.name_cstr().len() + tail.len();
        out.put_u8(b'B');
        out.put_u32(len as u32);
        out.put_slice(portal);
        out.put_u8(0);
        out.put_slice(statement.name_cstr());
        out.put_slice(tail);
        self.expected.push_back(Expect::Bind);
        Some(Request::Replaced)
    }

    fn describe(&mut self, body: &[u8], out: &mut BytesMut) -> Option<Request> {
        let (&kind, rest) = body.split_first()?;
        if kind != b'S' {
            return None;
        }
        let name = cstr(rest).filter(|n| !n.is_empty())?;
        let statement = self.client.get(name)?.clone();
        self.ensure_prepared(&statement, out);
        out.put_u8(b'D');
        out.put_u32(4 + 1 + statement.name_cstr().len() as u32);
        out.put_u8(b'S');
        out.put_slice(statement.name_cstr());
        self.expected.push_back(Expect::DescribeStatement);
        Some(Request::Replaced)
    }

    /// Close of a named statement acts on the client's view only; the server keeps it for others.
    fn close(&mut self, body: &[u8]) -> Option<Request> {
        let (&kind, rest) = body.split_first()?;
        if kind != b'S' {
            return None;
        }
        let name = cstr(rest).filter(|n| !n.is_empty())?;
        self.client.remove(name);
        self.expected.push_back(Expect::Synthetic(b'3'));
        Some(Request::Replaced)
    }

    fn ensure_prepared(&mut self, statement: &Statement, out: &mut BytesMut) {
        if self.server.touch(statement.id) {
            self.metrics.prepared_cache_hits.inc();
        } else {
            self.prepare(statement, out, true);
        }
    }

    /// Writes the Parse for `statement` (after closing the statement it evicts, if any).
    fn prepare(&mut self, statement: &Statement, out: &mut BytesMut, swallow: bool) {
        self.metrics.prepared_cache_misses.inc();
        if let Some(evicted) = self.server.insert(statement.id) {
            self.metrics.prepared_cache_evictions.inc();
            let name = format!("__sluice_{evicted}");
            out.put_u8(b'C');
            out.put_u32(4 + 1 + name.len() as u32 + 1);
            out.put_u8(b'S');
            out.put_slice(name.as_bytes());
            out.put_u8(0);
            self.expected.push_back(Expect::Swallow {
                tag: b'3',
                prepared: None,
            });
        }
        out.put_slice(statement.parse_message());
        let prepared = Some(statement.id);
        self.expected.push_back(if swallow {
            Expect::Swallow {
                tag: b'1',
                prepared,
            }
        } else {
            Expect::Parse { prepared }
        });
    }

    /// Writes the responses the proxy owes before the next server message (ParseComplete and
    /// CloseComplete for requests it did not send). True if it wrote any.
    pub fn owed(&mut self, out: &mut BytesMut) -> bool {
        let mut wrote = false;
        while let Some(Expect::Synthetic(tag)) = self.expected.front() {
            out.put_slice(&[*tag, 0, 0, 0, 4]);
            self.expected.pop_front();
            wrote = true;
        }
        wrote
    }

    /// Whether the proxy still owes the client a response of its own at the head of the queue.
    pub fn owes(&self) -> bool {
        matches!(self.expected.front(), Some(Expect::Synthetic(_)))
    }

    /// Matches a server message with the request it answers.
    pub fn response(&mut self, tag: u8) -> Response {
        // Asynchronous messages answer nothing.
        if matches!(tag, b'N' | b'A' | b'S') {
            return Response::Forward;
        }
        let Some(&head) = self.expected.front() else {
            return Response::Forward;
        };
        if tag == b'E' {
            if head != Expect::UntilReady {
                self.skip_to_sync();
            }
            return Response::Forward;
        }
        let done = match head {
            Expect::Parse { .. } => tag == b'1',
            Expect::Bind => tag == b'2',
            Expect::Close => tag == b'3',
            Expect::DescribeStatement | Expect::DescribePortal => matches!(tag, b'T' | b'n'),
            Expect::Execute => matches!(tag, b'C' | b'I' | b's'),
            Expect::UntilReady => tag == b'Z',
            Expect::Swallow {
                tag: swallowed,
                prepared,
            } if swallowed == tag => {
                if let Some(id) = prepared {
                    self.client.mark_valid(id);
                }
                self.expected.pop_front();
                return Response::Drop;
            }
            Expect::Swallow { .. } | Expect::Synthetic(_) => false,
        };
        if done {
            if let Expect::Parse { prepared: Some(id) } = head {
                self.client.mark_valid(id);
            }
            self.expected.pop_front();
        }
        Response::Forward
    }

    /// After an error in extended protocol the server skips everything up to Sync: so do we, and
    /// statements whose Parse was skipped or failed are not prepared after all.
    fn skip_to_sync(&mut self) {
        while let Some(&head) = self.expected.front() {
            if head == Expect::UntilReady {
                return;
            }
            if let Expect::Parse {
                prepared: Some(id), ..
            }
            | Expect::Swallow {
                prepared: Some(id), ..
            } = head
            {
                self.server.remove(id);
            }
            self.expected.pop_front();
        }
    }
}

#[cfg(test)]
#[path = "tests_exchange.rs"]
mod tests;
