//! Start-up: the database is created on first start, even by several processes at once.

use std::time::Duration;

use courier_tests::TestEnv;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn nodes_starting_at_once_create_and_migrate_the_database_once() {
    let name = format!("courier_test_start_{}", uuid::Uuid::now_v7().simple());
    let server = courier_tests::Services::default().postgres;
    let url = format!("{server}/{name}");
    let start = || async {
        let pool = courier_shared::db::connect(&url, 2, Duration::from_secs(10)).await?;
        courier_shared::db::migrate(&pool).await?;
        pool.close().await;
        Ok::<(), courier_shared::db::SetupError>(())
    };
    let results = futures::future::join_all((0..4).map(|_| start())).await;
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await.unwrap();
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

#[tokio::test]
async fn a_taken_port_fails_start_up_naming_the_setting_to_change() {
    let env = TestEnv::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();

    let mut worker = env.worker_config();
    worker.metrics_addr = taken_addr;
    let error = courier_worker::Worker::start(worker).await.err().expect("a second listener on the port fails").to_string();
    assert!(error.contains("set METRICS_ADDR"), "{error}");

    let mut api = env.api_config();
    api.admin_addr = taken_addr;
    let error = courier_api::ApiServer::start(api).await.err().expect("the admin port is taken").to_string();
    assert!(error.contains("set ADMIN_ADDR"), "{error}");

    let mut api = env.api_config();
    api.api_addr = taken_addr;
    let error = courier_api::ApiServer::start(api).await.err().expect("the client port is taken").to_string();
    assert!(error.contains("set API_ADDR"), "{error}");
    drop(taken);
    env.cleanup().await;
}
