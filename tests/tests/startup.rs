//! Start-up: the database is created on first start, even by several processes at once.

use std::time::Duration;

use courier_tests::TestEnv;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn nodes_starting_at_once_create_and_migrate_the_database_once() {
    let name = format!("courier_test_start_{}", uuid::Uuid::now_v7().simple());
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let start = || async {
        let pool = courier_shared::db::connect(&url, 2, Duration::from_secs(10)).await?;
        courier_shared::db::migrate(&pool).await?;
        pool.close().await;
        Ok::<(), courier_shared::db::SetupError>(())
    };
    let results = futures::future::join_all((0..4).map(|_| start())).await;
    let mut admin = PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut admin).await.unwrap();
    for result in results {
        result.expect("every node starts");
    }
}

#[tokio::test]
async fn api_and_worker_start_against_the_same_fresh_prefix() {
    // Two processes declaring the topology at once must not trip over each other.
    let env = TestEnv::new().await;
    let (api, worker) = tokio::join!(courier_api::ApiServer::start(env.api_config()), courier_worker::Worker::start(env.worker_config()));
    let api = api.expect("api starts");
    let worker = worker.expect("worker starts");
    courier_tests::eventually("both connected", || async { (worker.is_connected()).then_some(()) }).await;
    api.shutdown();
    api.wait().await;
    worker.stop().await;
    env.cleanup().await;
}
