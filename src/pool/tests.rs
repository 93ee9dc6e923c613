//! Pool unit tests: pause, the waiter queue (timeouts, reserve, notices, close, abandoned
//! waits) and the order a returning connection picks its waiter in. Pools here point at a port
//! that refuses, so every connect fails fast; real connections are the integration tests' part.

use super::*;
use crate::config::ServerTls;
use crate::net::ServerTlsConnector;
use std::future::Future;
use std::task::Poll;

/// A pool whose connections go nowhere (port 1 refuses), so a checkout past the pause gate
/// fails fast with `Connect`.
fn unreachable_pool(checkout_timeout: Duration) -> Arc<Pool> {
    pool_with(PoolSettings {
        checkout_timeout,
        ..PoolSettings::default()
    })
}

/// Like [`unreachable_pool`], with `settings`.
fn pool_with(settings: PoolSettings) -> Arc<Pool> {
    let connect = ConnectParams {
        host: "127.0.0.1".into(),
        port: 1,
        user: "u".into(),
        password: None,
        database: "d".into(),
        tls: ServerTlsConnector::new(&ServerTls {
            mode: crate::config::ServerTlsMode::Disable,
            ..ServerTls::default()
        })
        .unwrap(),
        connect_timeout: Duration::from_secs(1),
        max_message_size: 1 << 20,
    };
    Pool::new("d/u@n".into(), settings, connect)
}

#[tokio::test]
async fn paused_checkout_times_out_then_resume_lets_it_through() {
    let pool = unreachable_pool(Duration::from_millis(100));
    pool.pause();
    assert!(pool.is_paused());
    let err = pool.checkout(WorkerId::MAIN).await.unwrap_err();
    assert!(matches!(err, PoolError::Paused { .. }), "{err}");
    assert_eq!(pool.stats().waiting, 0);

    let pool = unreachable_pool(Duration::from_secs(10));
    pool.pause();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout(WorkerId::MAIN).await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pool.stats().waiting, 1);
    pool.resume();
    let result = tokio::time::timeout(Duration::from_secs(5), waiter).await;
    let err = result.unwrap().unwrap().unwrap_err();
    assert!(matches!(err, PoolError::Connect { .. }), "{err}");
    assert!(pool.idle_servers().is_empty());
}

/// A pool with no regular slots, so every checkout waits, with `settings` adjusted by `f`.
fn full_pool(f: impl FnOnce(&mut PoolSettings)) -> Arc<Pool> {
    let mut settings = PoolSettings {
        size: 0,
        checkout_notice_after: Duration::ZERO,
        ..PoolSettings::default()
    };
    f(&mut settings);
    pool_with(settings)
}

#[tokio::test]
async fn waits_past_checkout_timeout_fail_together_and_leave_the_queue() {
    let pool = full_pool(|s| s.checkout_timeout = Duration::from_millis(150));
    let started = Instant::now();
    let waits: Vec<_> = (0..20)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.checkout(WorkerId(0)).await.map(|_| ()) })
        })
        .collect();
    for wait in waits {
        let err = wait.await.unwrap().unwrap_err();
        assert!(matches!(err, PoolError::CheckoutTimeout { .. }), "{err}");
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(140), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(pool.stats().waiting, 0);
    assert_eq!(pool.metrics().checkout_timeouts.get(), 20);
    assert_eq!(pool.metrics().clients_waiting.get(), 0);
    // The watchdog has gone: a later wait starts a new one and still times out.
    let err = pool.checkout(WorkerId(0)).await.unwrap_err();
    assert!(matches!(err, PoolError::CheckoutTimeout { .. }), "{err}");
}

#[tokio::test]
async fn a_freed_slot_goes_to_the_waiter() {
    let pool = full_pool(|s| {
        s.size = 1;
        s.checkout_timeout = Duration::from_secs(10);
    });
    assert!(pool.lock_slots().try_take(1), "the only slot");
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout(WorkerId(0)).await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pool.stats().waiting, 1);
    pool.free_slot(SlotKind::Regular);
    // The waiter holds the slot now and tries to open a connection (which fails here).
    let result = tokio::time::timeout(Duration::from_secs(5), waiter).await;
    let err = result.unwrap().unwrap().unwrap_err();
    assert!(matches!(err, PoolError::Connect { .. }), "{err}");
    let stats = pool.stats();
    assert_eq!((stats.active, stats.waiting), (0, 0), "{stats:?}");
}

#[tokio::test]
async fn a_reserve_slot_goes_to_a_client_that_waited_reserve_timeout() {
    let pool = full_pool(|s| {
        s.reserve_size = 1;
        s.reserve_timeout = Duration::from_millis(100);
        s.checkout_timeout = Duration::from_secs(10);
    });
    let started = Instant::now();
    let err = pool.checkout(WorkerId(0)).await.unwrap_err();
    assert!(matches!(err, PoolError::Connect { .. }), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(90));
    assert_eq!(pool.stats().active, 0, "the reserve slot is free again");
    // The next waiter gets it after its own reserve_timeout, not at the first one's deadline.
    let started = Instant::now();
    let err = pool.checkout(WorkerId(0)).await.unwrap_err();
    assert!(matches!(err, PoolError::Connect { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_waiting_client_is_noticed_once() {
    let pool = full_pool(|s| {
        s.checkout_notice_after = Duration::from_millis(50);
        s.checkout_timeout = Duration::from_millis(300);
    });
    let notices = std::sync::atomic::AtomicUsize::new(0);
    let notice = || async {
        notices.fetch_add(1, Ordering::Relaxed);
    };
    let err = pool
        .checkout_noticed(WorkerId(0), Some(notice))
        .await
        .unwrap_err();
    assert!(matches!(err, PoolError::CheckoutTimeout { .. }), "{err}");
    assert_eq!(notices.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn close_ends_every_wait_and_an_abandoned_wait_leaves_the_queue() {
    let pool = full_pool(|s| s.checkout_timeout = Duration::from_secs(10));
    let abandoned =
        tokio::time::timeout(Duration::from_millis(50), pool.checkout(WorkerId(0))).await;
    assert!(abandoned.is_err());
    assert_eq!(pool.stats().waiting, 0);
    assert_eq!(pool.metrics().clients_waiting.get(), 0);

    let waits: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.checkout(WorkerId(0)).await.map(|_| ()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pool.stats().waiting, 3);
    pool.close();
    for wait in waits {
        let result = tokio::time::timeout(Duration::from_secs(2), wait).await;
        let err = result.unwrap().unwrap().unwrap_err();
        assert!(matches!(err, PoolError::Closed { .. }), "{err}");
    }
    let err = pool.checkout(WorkerId(0)).await.unwrap_err();
    assert!(matches!(err, PoolError::Closed { .. }), "{err}");
}

/// The watchdog runs where the pool's housekeeping runs, not on the runtime of the checkout that
/// started it: a worker's runtime keeps no timer (so no timed wake-ups) while its clients wait.
#[test]
fn the_watchdog_runs_on_the_housekeeping_runtime() {
    let housekeeping = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let worker = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = full_pool(|s| s.checkout_timeout = Duration::from_millis(200));
    let stop = tokio_util::sync::CancellationToken::new();
    housekeeping.spawn(pool.clone().maintain(stop.clone()));
    for _ in 0..500 {
        if pool.housekeeping.get().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(pool.housekeeping.get().is_some(), "housekeeping started");
    let err = worker.block_on(async {
        let mut wait = std::pin::pin!(pool.checkout(WorkerId(0)));
        let first = std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "the checkout waits");
        assert_eq!(
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            0
        );
        wait.await.unwrap_err()
    });
    assert!(matches!(err, PoolError::CheckoutTimeout { .. }), "{err}");
    stop.cancel();
}
