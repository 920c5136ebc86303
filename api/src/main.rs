use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use courier_api::{ApiConfig, ApiServer};
use courier_shared::{auth, config::parse_duration, db, telemetry};

/// Courier API node: WebSocket (/ws) and REST (/api) for chat clients.
#[derive(Parser)]
#[command(name = "courier-api", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    config: ApiConfig,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API node (the default).
    Serve,
    /// Create the database if needed, apply migrations, and exit.
    Migrate,
    /// Print the OpenAPI 3.1 document of the HTTP API (what
    /// `GET /api/openapi.json` serves): `courier-api openapi > docs/openapi.json`.
    Openapi,
    /// Print a signed HS256 token for a user, signed with JWT_SECRET (16+ bytes;
    /// refused when it is unset, unless --insecure-dev-secret).
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        user: String,
        /// Display name (`name` claim).
        #[arg(long)]
        name: Option<String>,
        /// Avatar URL (`picture` claim).
        #[arg(long)]
        picture: Option<String>,
        /// Role claim, e.g. `admin`.
        #[arg(long)]
        role: Option<String>,
        /// Shorthand for `--role admin`: a token for the admin API (/admin).
        #[arg(long, conflicts_with = "role")]
        admin: bool,
        /// The `did` claim: the device the token is for.
        #[arg(long)]
        device: Option<String>,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing(cli.config.common.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::Migrate => {
            let common = &cli.config.common;
            let pool = db::connect(&common.database_url, 2, Duration::from_secs(30)).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Openapi => {
            print!("{}", courier_api::http::openapi::document_text()?);
            Ok(())
        }
        Command::Token { user, name, picture, role, admin, device, ttl } => {
            let role = if admin { Some(auth::ADMIN_ROLE.to_owned()) } else { role };
            auth::validate_user_id(&user).map_err(|e| anyhow::anyhow!(e.message))?;
            if let Some(device) = &device {
                courier_shared::db::devices::validate_device_id(device).map_err(|e| anyhow::anyhow!(e.message))?;
            }
            let request = auth::DevTokenRequest { user_id: user, name, picture, role, device_id: device, ttl };
            let secret = cli.config.jwt.signing_secret()?;
            let token = auth::sign_hs256(secret, &request).context("signing the token")?;
            println!("{token}");
            Ok(())
        }
    }
}

async fn serve(config: ApiConfig) -> anyhow::Result<()> {
    let server = ApiServer::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown();
    server.wait().await;
    Ok(())
}

/// SIGTERM (docker stop, Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
