//! PostgreSQL access, one module per table family. Queries are plain
//! `sqlx::query_as` with static SQL, so a clean clone builds without a database.

pub mod chats;
pub mod deadletters;
pub mod devices;
pub mod log;
pub mod messages;
pub mod ops;
pub mod outbox;
pub mod presence;
pub mod status;
pub mod sync;
pub mod users;

use std::{str::FromStr, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// The migrations in `migrations/`, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Why the database could not be prepared at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("DATABASE_URL is invalid: {0}")]
    InvalidUrl(sqlx::Error),
    #[error("cannot reach PostgreSQL: {0}")]
    Unreachable(sqlx::Error),
    #[error("cannot create the database: {0}")]
    Create(sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// How a pool's connections plan the statements they prepare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plans {
    /// Each call is planned for its own parameters (`force_custom_plan`).
    /// Every hot statement joins against UNNEST of a batch. A generic plan
    /// cached while a table was small (a fresh deploy, a new partition) keeps
    /// seq-scanning it until autovacuum's next ANALYZE, which at thousands of
    /// messages a second costs more than planning each batch.
    PerCall,
    /// Each statement is planned once per connection, without its parameters,
    /// and the plan kept (`force_generic_plan`). Only for statements that
    /// find every row they touch by a key: a lookup, a range, or a batch
    /// joined to a table's key. So that one plan fits any statistics (a
    /// table empty when the plan was made, or never analyzed), the planner
    /// on these connections prices sequential scans, hash joins and merge
    /// joins out, and reads are fenced with LATERAL or `OFFSET 0` where a
    /// subquery would otherwise be flattened into a join (see
    /// `log::pending_deliveries`). `tests/tests/plans.rs` checks each plan.
    ///
    /// What the planner cannot tell apart on a table without statistics is
    /// which of several indexes with the same first column serves a range
    /// best: a plan made while `messages` was a few pages sometimes reads a
    /// range of `(chat_id, seq)` through `(chat_id, created_at)`, every
    /// entry of the chat. ANALYZE (autovacuum) replans every kept statement
    /// of the table; and these connections are replaced every
    /// [`KEPT_PLANS_LIFETIME`], so without autovacuum a plan made on a young
    /// table lasts no longer than that.
    Kept,
}

/// How long a connection that keeps plans lives: its plans are made again
/// on the next one, for the tables as they are then.
pub const KEPT_PLANS_LIFETIME: Duration = Duration::from_secs(60);

impl Plans {
    /// The settings of a connection planning this way.
    pub fn settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Plans::PerCall => &[("plan_cache_mode", "force_custom_plan")],
            Plans::Kept => &[
                ("plan_cache_mode", "force_generic_plan"),
                ("enable_seqscan", "off"),
                ("enable_hashjoin", "off"),
                ("enable_mergejoin", "off"),
            ],
        }
    }
}

/// Opens a pool on `url`, creating the database first if it does not exist.
/// Waits (with backoff, up to `patience`) for PostgreSQL to accept connections.
pub async fn connect(url: &str, max_connections: u32, patience: Duration) -> Result<PgPool, SetupError> {
    connect_observed(url, max_connections, patience, None, Plans::PerCall).await
}

/// [`connect`], planning as `plans` says and counting every connection the
/// pool opens on `opened` (the `courier_db_connections_opened_total` metric:
/// it grows when connections are replaced).
pub async fn connect_observed(
    url: &str,
    max_connections: u32,
    patience: Duration,
    opened: Option<prometheus::IntCounter>,
    plans: Plans,
) -> Result<PgPool, SetupError> {
    let options = PgConnectOptions::from_str(url).map_err(SetupError::InvalidUrl)?.options(plans.settings().iter().copied());
    create_database_if_missing(&options, patience).await?;
    let mut pool = PgPoolOptions::new();
    if let Some(opened) = opened {
        pool = pool.after_connect(move |_, _| {
            opened.inc();
            Box::pin(async { Ok(()) })
        });
    }
    pool
        .max_connections(max_connections)
        // While PostgreSQL is down a send fails with `unavailable` after this
        // long; the client retries with the same clientMsgId.
        .acquire_timeout(Duration::from_secs(3))
        // A broken connection fails one query (callers map it to a retryable
        // error) instead of costing every query a ping.
        .test_before_acquire(false)
        .max_lifetime(match plans {
            Plans::PerCall => Some(Duration::from_secs(30 * 60)), // sqlx's default
            Plans::Kept => Some(KEPT_PLANS_LIFETIME),
        })
        .connect_with(options)
        .await
        .map_err(SetupError::Unreachable)
}

/// A transaction whose COMMIT does not wait for its WAL to reach the disk
/// (`synchronous_commit = off`: PostgreSQL flushes it within ~0.6 s). A
/// PostgreSQL crash in that window undoes it, but never half of it. Only for
/// writes that are redone anyway if lost and that nobody was told about:
/// `sender_synced` (the sender is told again), deleting confirmed outbox rows
/// (the job is published again and ignored). Never a send (✓ sent promises
/// durability) nor `delivered` (the sender is shown ✓✓ right after it).
pub async fn begin_relaxed(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    // One round trip: a simple query may hold both statements.
    pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off").await
}

/// Applies pending migrations. sqlx holds an advisory lock meanwhile, so two
/// nodes starting at once take turns.
pub async fn migrate(pool: &PgPool) -> Result<(), SetupError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

async fn create_database_if_missing(options: &PgConnectOptions, patience: Duration) -> Result<(), SetupError> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_total_delay(Some(patience))
        .without_max_times()
        .build();
    loop {
        match options.connect().await {
            Ok(connection) => {
                let _ = connection.close().await;
                return Ok(());
            }
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("3D000") => {
                return create_database(options).await;
            }
            Err(error) => match delays.next() {
                Some(delay) => {
                    tracing::warn!(%error, "PostgreSQL is not ready; retrying");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(SetupError::Unreachable(error)),
            },
        }
    }
}

async fn create_database(options: &PgConnectOptions) -> Result<(), SetupError> {
    let Some(name) = options.get_database().map(str::to_owned) else { return Ok(()) };
    let mut admin: PgConnection =
        options.clone().database("postgres").connect().await.map_err(SetupError::Unreachable)?;
    let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut admin).await;
    let _ = admin.close().await;
    match result {
        Ok(_) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        // Another node created it first: 42P04 if it had committed, 23505 if
        // both CREATE DATABASE statements raced on the catalog.
        Err(sqlx::Error::Database(error)) if matches!(error.code().as_deref(), Some("42P04" | "23505")) => Ok(()),
        Err(error) => Err(SetupError::Create(error)),
    }
}

/// Whether PostgreSQL answers a trivial query (readiness).
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// Whether an error is a unique violation (SQLSTATE 23505).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}
