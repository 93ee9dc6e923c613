//! Named prepared statements under transaction pooling, on a pool small enough that every client's
//! statements run on server connections other clients use too: renaming, re-preparing on demand,
//! Close and DEALLOCATE on the client's view only, colliding names, errors in pipelines, and
//! pgbench -M prepared.

mod common;

use common::{proxy_yaml, start_proxy};
use futures_util::future::join_all;

#[tokio::test]
async fn many_clients_run_prepared_statements_on_two_server_connections() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 2", "")).await;
    let tasks = (0..16i32).map(|id| {
        let config = proxy.pg_config("app", "app-pass", "sluice");
        tokio::spawn(async move {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            // tokio-postgres names statements s0, s1, ... per connection: every client uses the
            // same names, half of them for different SQL.
            let sql = if id % 2 == 0 {
                "SELECT $1::int + 1000"
            } else {
                "SELECT $1::int * 2"
            };
            let stmt = client.prepare(sql).await.unwrap();
            let other = client.prepare("SELECT $1::text || '!'").await.unwrap();
            for n in 0..30i32 {
                let got: i32 = client.query_one(&stmt, &[&n]).await.unwrap().get(0);
                let want = if id % 2 == 0 { n + 1000 } else { n * 2 };
                assert_eq!(got, want, "client {id}");
                let text: String = client
                    .query_one(&other, &[&format!("{id}")])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(text, format!("{id}!"));
            }
        })
    });
    for result in join_all(tasks).await {
        result.unwrap();
    }
    let generation = proxy.app.shared().generation.load();
    let open: usize = generation.pools.iter().map(|(_, p)| p.stats().open).sum();
    assert!(open <= 2, "{open} server connections");
    proxy.stop().await;
}

#[tokio::test]
async fn close_and_deallocate_act_on_the_clients_view_only() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 1", "")).await;
    let a = proxy.app_client().await;
    let b = proxy.app_client().await;
    let stmt_a = a.prepare("SELECT 'shared'::text").await.unwrap();
    let stmt_b = b.prepare("SELECT 'shared'::text").await.unwrap();
    // Dropping a's statement (a Close message) leaves b's, the same SQL, working.
    drop(stmt_a);
    for _ in 0..3 {
        let row = b.query_one(&stmt_b, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "shared");
        a.batch_execute("SELECT 1").await.unwrap();
    }
    // DEALLOCATE ALL from a client forgets its statements, not b's.
    let again = a.prepare("SELECT 'again'::text").await.unwrap();
    a.batch_execute("DEALLOCATE ALL").await.unwrap();
    let err = a.query_one(&again, &[]).await.unwrap_err();
    assert_eq!(common::sqlstate(&err).as_deref(), Some("26000"), "{err}");
    let row = b.query_one(&stmt_b, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "shared");
    proxy.stop().await;
}

#[tokio::test]
async fn sql_prepare_and_execute_work() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 2", "")).await;
    let client = proxy.app_client().await;
    client
        .batch_execute("PREPARE doubled(int) AS SELECT $1 * 2")
        .await
        .unwrap();
    for n in 0..5 {
        let rows = client
            .simple_query(&format!("EXECUTE doubled({n})"))
            .await
            .unwrap();
        let value = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(value, Some((n * 2).to_string()));
    }
    client.batch_execute("DEALLOCATE doubled").await.unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn an_error_in_a_pipeline_drops_the_rest_until_sync() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 1", "")).await;
    let client = proxy.app_client().await;
    let good = client.prepare("SELECT $1::int").await.unwrap();
    let bad = client.prepare("SELECT 1 / $1::int").await.unwrap();
    // Pipelined: the division by zero fails, the queries after it in the pipeline fail with it
    // or run after their own Sync, and the connection stays usable.
    let (r1, r2, r3) = tokio::join!(
        client.query_one(&good, &[&1i32]),
        client.query_one(&bad, &[&0i32]),
        client.query_one(&good, &[&3i32]),
    );
    assert_eq!(r1.unwrap().get::<_, i32>(0), 1);
    assert_eq!(common::sqlstate(&r2.unwrap_err()).as_deref(), Some("22012"));
    assert_eq!(r3.unwrap().get::<_, i32>(0), 3);
    let other = proxy.app_client().await;
    let stmt = other.prepare("SELECT $1::int").await.unwrap();
    assert_eq!(
        other
            .query_one(&stmt, &[&7i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
    proxy.stop().await;
}

#[tokio::test]
async fn pgbench_prepared_with_100_clients_through_a_pool_of_10() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 10", "")).await;
    let port = proxy.addr.port();
    common::pgbench_init(port).await;
    let args = [
        "-c", "100", "-j", "2", "-T", "4", "-M", "prepared", "sluice",
    ];
    common::pgbench_without_failures(port, &args, "prepared").await;
    let generation = proxy.app.shared().generation.load();
    let open: usize = generation.pools.iter().map(|(_, p)| p.stats().open).sum();
    assert!(open <= 10, "{open} server connections");
    proxy.stop().await;
}
