//! Hot reload under load: changing one pool's size and adding a user causes no client error and
//! keeps the unchanged pools with their idle server connections; restart-only keys are kept as
//! running; a broken file changes nothing.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{proxy_yaml, start_proxy, Proxy};
use pgsluice::devcluster::roles;
use pgsluice::pool::PoolKey;
use pgsluice::topology::NodeId;

fn key(user: &str) -> PoolKey {
    PoolKey {
        database: "sluice".into(),
        user: user.into(),
        node: NodeId(0),
    }
}

/// Runs `SELECT 1` on a persistent connection and on fresh ones until `stop`, keeping failures.
async fn client_loop(
    proxy: Arc<Proxy>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
) {
    let persistent = proxy.app_client().await;
    while !stop.load(Ordering::Relaxed) {
        let fresh = async {
            let client = proxy.connect("app", "app-pass", "sluice").await?;
            client.simple_query("SELECT 1").await?;
            persistent.simple_query("SELECT 1").await?;
            Ok::<_, tokio_postgres::Error>(())
        };
        match fresh.await {
            Ok(()) => {
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_keeps_unchanged_pools_and_clients() {
    let yaml = proxy_yaml("mode: transaction, size: 4", "");
    let proxy = Arc::new(start_proxy(&yaml).await);
    let dir = std::env::temp_dir().join(format!("pgsluice-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pgsluice.yaml");
    std::fs::write(&file, &yaml).unwrap();
    proxy.app.set_config_path(&file);

    // An idle server connection in the md5app pool, which the reload does not change.
    let md5 = proxy
        .connect("md5app", "md5-app-pass", "sluice")
        .await
        .unwrap();
    md5.simple_query("SELECT 1").await.unwrap();
    let before = proxy.app.shared().generation.load_full();
    let md5_pool = before
        .pools
        .get("sluice", "md5app", NodeId(0))
        .unwrap()
        .clone();
    // The connection goes back just after the client has its answer.
    let released = common::eventually(Duration::from_secs(5), || md5_pool.stats().idle == 1).await;
    assert!(released, "md5app's server connection is idle in its pool");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let loops: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(client_loop(
                proxy.clone(),
                stop.clone(),
                done.clone(),
                failures.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // app's pool grows to 6, a user is added, and the listener address (restart-only) changes.
    let new_user = format!(
        "users:\n  - {{ name: newapp, password: new-pass, server_user: {}, server_password: {} }}\n",
        roles::SCRAM_USER,
        roles::SCRAM_PASSWORD
    );
    let changed = yaml
        .replace(
            "{ name: app, password: app-pass,",
            "{ name: app, password: app-pass, pool: { size: 6 },",
        )
        .replacen("users:\n", &new_user, 1)
        + "listeners: [{ address: \"127.0.0.1:1\" }]\n";
    std::fs::write(&file, &changed).unwrap();
    proxy.app.reload_file().expect("reload applies");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let after = proxy.app.shared().generation.load_full();
    assert!(
        after.pools.shares(&before.pools, &key("md5app")),
        "unchanged pool kept"
    );
    assert!(
        !after.pools.shares(&before.pools, &key("app")),
        "resized pool rebuilt"
    );
    assert_eq!(
        after
            .pools
            .get("sluice", "app", NodeId(0))
            .unwrap()
            .settings()
            .size,
        6
    );
    assert_eq!(
        md5_pool.stats().idle,
        1,
        "its idle server connection survived"
    );
    assert_eq!(
        after.config.listeners, before.config.listeners,
        "restart-only key kept"
    );
    let newapp = proxy
        .connect("newapp", "new-pass", "sluice")
        .await
        .expect("added user");
    newapp.simple_query("SELECT 1").await.unwrap();
    md5.simple_query("SELECT 1")
        .await
        .expect("md5app client unaffected");

    // A broken file changes nothing.
    std::fs::write(&file, "pool: [ not a map").unwrap();
    let e = proxy.app.reload_file().expect_err("broken file refused");
    assert!(e.contains("pgsluice.yaml"), "{e}");
    let unchanged = proxy.app.shared().generation.load_full();
    assert!(
        Arc::ptr_eq(&after, &unchanged),
        "broken file changed the generation"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in loops {
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("loop stops")
            .unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "client errors during reload: {failures:#?}"
    );
    assert!(done.load(Ordering::Relaxed) > 3, "the loop ran");
    drop((md5, newapp, before, after, unchanged, md5_pool));
    let _ = std::fs::remove_dir_all(&dir);
    if let Ok(proxy) = Arc::try_unwrap(proxy) {
        proxy.stop().await;
    }
}
