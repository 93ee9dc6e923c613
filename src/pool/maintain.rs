//! Pool housekeeping on an interval: close idle connections past `server_idle_timeout` (above
//! `min_size`), past `server_lifetime`, or above `size` (reserve connections), and open
//! connections up to `min_size`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Member, OpenSlot, Pool, SlotKind};
use crate::net::WorkerId;

/// How often each pool looks after itself.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

impl Pool {
    /// Runs housekeeping until `stop` is cancelled, then closes the idle connections, unless a
    /// newer housekeeping task was started for this pool meanwhile (a reload kept the pool): that
    /// one owns them now. The task counts as started when this is called, not when first polled.
    pub fn maintain(
        self: Arc<Self>,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let me = self.maintainer.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let _ = self.housekeeping.set(tokio::runtime::Handle::current());
            self.maintain_loop(&stop).await;
            if self.maintainer.load(Ordering::SeqCst) == me {
                self.close_idle().await;
            }
        }
    }

    async fn maintain_loop(&self, stop: &CancellationToken) {
        let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.prune_idle().await;
            self.fill_to_min().await;
        }
    }

    /// Closes idle connections that are too old or idle too long (keeping `min_size` open).
    async fn prune_idle(&self) {
        let idle_timeout = self.settings.server_idle_timeout;
        let min = self.settings.min_size;
        let doomed: Vec<Box<Member>> = {
            let mut slots = self.lock_slots();
            let idle = &mut slots.idle;
            let mut open = self.open.load(Ordering::Relaxed);
            let mut doomed = Vec::new();
            // Oldest-used first: the Vec is used as a stack, so the front has waited longest.
            let mut i = 0;
            while i < idle.len() {
                let conn = &idle[i].conn;
                let too_idle =
                    !idle_timeout.is_zero() && conn.idle_for() >= idle_timeout && open > min;
                // Reserve connections handed back while others were out leave the pool above size.
                let above_size = open > self.settings.size;
                if self.expired(conn) || too_idle || above_size {
                    doomed.push(idle.remove(i));
                    open = open.saturating_sub(1);
                } else {
                    i += 1;
                }
            }
            self.metrics
                .server_idle
                .add(-i64::try_from(doomed.len()).unwrap_or(0));
            doomed
        };
        for member in doomed {
            tracing::debug!(pool = %self.name, "closing idle server connection (idle timeout or lifetime)");
            member.conn.close().await;
        }
    }

    /// Opens connections while fewer than `min_size` are open, each under a pool slot so the pool
    /// never exceeds `size`.
    async fn fill_to_min(&self) {
        while self.open.load(Ordering::Relaxed) < self.settings.min_size {
            if !self.lock_slots().try_take(self.settings.size) {
                return;
            }
            match self.connect_counted(WorkerId::MAIN).await {
                Ok(conn) => self.give_back(
                    Box::new(Member {
                        conn,
                        _slot: OpenSlot::new(&self.open),
                    }),
                    SlotKind::Regular,
                ),
                Err(e) => {
                    self.free_slot(SlotKind::Regular);
                    let key = format!("min_size:{}", self.name);
                    if let Some(suppressed) = crate::logging::repeats().allow(&key) {
                        tracing::warn!(pool = %self.name, error = %e, suppressed, "cannot open server connection for min_size");
                    }
                    return;
                }
            }
        }
    }
}
