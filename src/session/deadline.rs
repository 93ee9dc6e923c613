//! The relay's timeouts: `query_timeout` (a request waits too long for ReadyForQuery: cancel it on
//! the server), `idle_transaction_timeout` and `client_idle_timeout` (the client sends nothing
//! inside / outside a transaction: end the session). One timer per relay, armed only when a
//! timeout is configured and never reset per message: the relay notes when its state last changed
//! (a cheap `Instant`), and the timer, when it fires, checks that time and re-arms itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio::time::Sleep;

use crate::config::PoolSettings;
use crate::pool::CancelTarget;
use crate::protocol::backend::TransactionStatus;

/// Shortest re-check period, whatever the timeouts.
const MIN_TICK: Duration = Duration::from_millis(10);

/// The timeouts that apply to one relay, and where a query cancel goes.
#[derive(Clone, Debug, Default)]
pub struct Timeouts {
    /// 0 = never (each of the three).
    pub query: Duration,
    pub idle_transaction: Duration,
    pub client_idle: Duration,
    /// The server connection the relay uses, for cancelling a query that ran too long.
    pub cancel: Option<CancelTarget>,
}

impl Timeouts {
    /// The timeouts of a pool, cancelling through `cancel`.
    pub fn from_settings(settings: &PoolSettings, cancel: Option<CancelTarget>) -> Timeouts {
        Timeouts {
            query: settings.query_timeout,
            idle_transaction: settings.idle_transaction_timeout,
            client_idle: settings.client_idle_timeout,
            cancel,
        }
    }

    /// Whether any timeout is set (else the relay keeps no timer and reads no clock).
    pub fn any(&self) -> bool {
        !(self.query.is_zero() && self.idle_transaction.is_zero() && self.client_idle.is_zero())
    }
}

/// What a fired deadline means for the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// The client sat inside a transaction past `idle_transaction_timeout`.
    IdleInTransaction,
    /// The client sat between transactions past `client_idle_timeout`.
    ClientIdle,
}

/// The relay's single timer and the cancel it may have sent.
#[derive(Debug)]
pub struct Deadlines {
    timeouts: Timeouts,
    /// How often the timer re-checks at most: a quarter of the shortest timeout, so a state change
    /// towards a shorter timeout is noticed at most that late.
    tick: Duration,
    sleep: Pin<Box<Sleep>>,
    /// A cancel request on its way to the server; awaited before the connection is released, so it
    /// can never hit the next user of that connection.
    cancelling: Option<JoinHandle<()>>,
}

impl Deadlines {
    /// A timer for `timeouts`, or `None` when none is set.
    pub fn new(timeouts: Timeouts) -> Option<Deadlines> {
        if !timeouts.any() {
            return None;
        }
        let shortest = [
            timeouts.query,
            timeouts.idle_transaction,
            timeouts.client_idle,
        ]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min()
        .unwrap_or(Duration::from_secs(1));
        let tick = (shortest / 4).max(MIN_TICK);
        let sleep = Box::pin(tokio::time::sleep(tick));
        Some(Deadlines {
            timeouts,
            tick,
            sleep,
            cancelling: None,
        })
    }

    /// Polls the timer. `since` is when the relay's state last changed (a request started or was
    /// answered, or an idle client sent something); `busy` whether a request awaits its answer.
    /// A query past its timeout is cancelled on the server (the relay goes on and forwards the
    /// server's error); an idle client past its timeout ends the relay.
    pub fn poll(
        &mut self,
        cx: &mut Context<'_>,
        since: &mut Instant,
        busy: bool,
        status: TransactionStatus,
    ) -> Poll<Expired> {
        while self.sleep.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let (limit, expired) = if busy {
                (self.timeouts.query, None)
            } else if status != TransactionStatus::Idle {
                (
                    self.timeouts.idle_transaction,
                    Some(Expired::IdleInTransaction),
                )
            } else {
                (self.timeouts.client_idle, Some(Expired::ClientIdle))
            };
            let due = (!limit.is_zero()).then(|| *since + limit);
            if due.is_some_and(|due| now >= due) {
                match expired {
                    Some(expired) => return Poll::Ready(expired),
                    None => {
                        self.cancel_query(limit);
                        // Cancel again if the query still runs a whole timeout later.
                        *since = now;
                    }
                }
            }
            let next = match due {
                Some(due) if due > now => due.min(now + self.tick),
                _ => now + self.tick,
            };
            self.sleep.as_mut().reset(next.into());
        }
        Poll::Pending
    }

    /// Sends a CancelRequest for the relay's server connection (in the background; see
    /// [`Deadlines::finish`]).
    fn cancel_query(&mut self, limit: Duration) {
        let Some(target) = self.timeouts.cancel.clone() else {
            return;
        };
        if self.cancelling.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        tracing::info!(pool = %target.pool.name(), query_timeout = ?limit,
            "query_timeout fired: cancelling the query on the server");
        self.cancelling = Some(tokio::spawn(async move { target.send().await }));
    }

    /// Waits for a cancel request still on its way, so it is delivered before the server
    /// connection can go to anyone else.
    pub async fn finish(&mut self) {
        if let Some(handle) = self.cancelling.take() {
            let _ = handle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `deadlines` until it fires, touching `since` at `touch_at` (after the start).
    async fn fired_after(
        deadlines: &mut Deadlines,
        status: TransactionStatus,
        touch_at: Duration,
    ) -> Duration {
        let start = Instant::now();
        let mut since = start;
        let mut touched = false;
        std::future::poll_fn(|cx| {
            if !touched && start.elapsed() >= touch_at {
                since = Instant::now();
                touched = true;
            }
            match deadlines.poll(cx, &mut since, false, status) {
                Poll::Ready(expired) => Poll::Ready(expired),
                Poll::Pending if !touched => {
                    // Wake again to touch on time.
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        start.elapsed()
    }

    #[tokio::test]
    async fn fires_a_full_timeout_after_the_last_activity() {
        let timeouts = Timeouts {
            idle_transaction: Duration::from_millis(200),
            client_idle: Duration::from_millis(400),
            ..Timeouts::default()
        };
        let mut deadlines = Deadlines::new(timeouts.clone()).unwrap();
        let took = fired_after(
            &mut deadlines,
            TransactionStatus::InTransaction,
            Duration::from_millis(150),
        )
        .await;
        assert!(took >= Duration::from_millis(350), "fired after {took:?}");
        assert!(took < Duration::from_secs(2), "fired after {took:?}");

        let mut deadlines = Deadlines::new(timeouts).unwrap();
        let took = fired_after(&mut deadlines, TransactionStatus::Idle, Duration::ZERO).await;
        assert!(took >= Duration::from_millis(400), "fired after {took:?}");
        assert!(Deadlines::new(Timeouts::default()).is_none());
    }
}
