//! Pure replication-lag arithmetic and the freshness hysteresis of a replica.

use std::time::Duration;

use crate::config::HealthConfig;
use crate::topology::{Freshness, Lag, Lsn};

use super::tracker::Observation;

/// The lag limits of `health.max_lag_bytes`, `health.max_lag` and `health.lag_recovery`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LagLimits {
    /// 0 = no byte limit.
    pub max_bytes: u64,
    /// 0 = no time limit.
    pub max_time: Duration,
    /// Fraction of the limits a lagging replica must get under to be fresh again, in (0, 1].
    pub recovery: f64,
}

impl LagLimits {
    pub fn from_config(health: &HealthConfig) -> LagLimits {
        LagLimits {
            max_bytes: u64::try_from(health.max_lag_bytes).unwrap_or(u64::MAX),
            max_time: health.max_lag,
            recovery: health.lag_recovery,
        }
    }

    /// Whether `lag` is over `factor` times a limit that is set.
    fn over(&self, lag: Lag, factor: f64) -> bool {
        // f64 keeps 53 bits: exact enough for limits, and never panics.
        let bytes_over = self.max_bytes > 0 && lag.bytes as f64 > self.max_bytes as f64 * factor;
        let time_over = !self.max_time.is_zero()
            && lag.time.as_secs_f64() > self.max_time.as_secs_f64() * factor;
        bytes_over || time_over
    }
}

/// How far `replica` is behind a primary at `primary_lsn`: bytes saturate at 0 when the replica
/// is ahead (the two were sampled at different moments); time is 0 when the replica replayed
/// everything it received, so an idle primary does not make its replicas look late. `None`
/// when the replica has not reported a replay position.
pub fn measure(primary_lsn: Lsn, replica: &Observation) -> Option<Lag> {
    let replayed = replica.lsn?;
    let bytes = primary_lsn.0.saturating_sub(replayed.0);
    let time = if replica.receive_lsn == Some(replayed) {
        Duration::ZERO
    } else {
        replica.replay_delay.unwrap_or(Duration::ZERO)
    };
    Some(Lag { bytes, time })
}

/// The freshness after measuring `lag`: a fresh replica becomes lagging over a limit; a lagging
/// one becomes fresh only at or under `recovery` times every limit (hysteresis).
pub fn next_freshness(current: Freshness, lag: Lag, limits: &LagLimits) -> Freshness {
    match current {
        Freshness::Fresh if limits.over(lag, 1.0) => Freshness::Lagging,
        Freshness::Lagging if !limits.over(lag, limits.recovery) => Freshness::Fresh,
        unchanged => unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LagLimits = LagLimits {
        max_bytes: 1000,
        max_time: Duration::from_secs(10),
        recovery: 0.5,
    };

    fn replica(lsn: u64, receive: Option<u64>, delay_secs: Option<u64>) -> Observation {
        Observation {
            in_recovery: true,
            lsn: Some(Lsn(lsn)),
            receive_lsn: receive.map(Lsn),
            replay_delay: delay_secs.map(Duration::from_secs),
        }
    }

    fn lag(bytes: u64, secs: u64) -> Lag {
        Lag {
            bytes,
            time: Duration::from_secs(secs),
        }
    }

    #[test]
    fn lag_is_primary_minus_replay_saturating() {
        assert_eq!(
            measure(Lsn(500), &replica(200, Some(300), Some(4))),
            Some(lag(300, 4))
        );
        assert_eq!(
            measure(Lsn(100), &replica(200, Some(300), Some(4))),
            Some(lag(0, 4))
        );
        let mut unknown = replica(0, None, None);
        unknown.lsn = None;
        assert_eq!(measure(Lsn(100), &unknown), None);
    }

    #[test]
    fn idle_replica_that_replayed_everything_has_no_time_lag() {
        // Last transaction an hour ago, but nothing left to replay.
        assert_eq!(
            measure(Lsn(200), &replica(200, Some(200), Some(3600))),
            Some(lag(0, 0))
        );
        // No receive position (not streaming): the replay delay counts.
        assert_eq!(
            measure(Lsn(200), &replica(200, None, Some(7))),
            Some(lag(0, 7))
        );
    }

    #[test]
    fn freshness_has_hysteresis() {
        use Freshness::{Fresh, Lagging};
        assert_eq!(
            next_freshness(Fresh, lag(1000, 10), &LIMITS),
            Fresh,
            "at the limit"
        );
        assert_eq!(next_freshness(Fresh, lag(1001, 0), &LIMITS), Lagging);
        assert_eq!(next_freshness(Fresh, lag(0, 11), &LIMITS), Lagging);
        assert_eq!(
            next_freshness(Lagging, lag(900, 0), &LIMITS),
            Lagging,
            "under the limit is not enough"
        );
        assert_eq!(
            next_freshness(Lagging, lag(400, 6), &LIMITS),
            Lagging,
            "time still over half"
        );
        assert_eq!(next_freshness(Lagging, lag(500, 5), &LIMITS), Fresh);
    }

    #[test]
    fn zero_limits_are_off() {
        use Freshness::Fresh;
        let bytes_only = LagLimits {
            max_time: Duration::ZERO,
            ..LIMITS
        };
        assert_eq!(next_freshness(Fresh, lag(10, 86_400), &bytes_only), Fresh);
        let none = LagLimits {
            max_bytes: 0,
            ..bytes_only
        };
        assert_eq!(next_freshness(Fresh, lag(u64::MAX, 86_400), &none), Fresh);
    }
}
