use clap::Parser;
use courier_shared::telemetry;
use courier_worker::{Worker, WorkerConfig};

/// Courier delivery worker: routes delivery jobs from RabbitMQ to API nodes.
#[derive(Parser)]
#[command(name = "courier-worker", version)]
struct Cli {
    #[command(flatten)]
    config: WorkerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing(cli.config.common.log_format);
    let worker = Worker::start(cli.config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    worker.stop().await;
    Ok(())
}

/// SIGTERM (docker stop, Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
