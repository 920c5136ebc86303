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
    return_large_buffers_to_the_kernel();
    let worker = Worker::start(cli.config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    worker.stop().await;
    Ok(())
}

/// Fixes glibc's mmap threshold at its default of 128 KiB. Left dynamic,
/// glibc raises it to the largest block freed so far: after the first drain
/// page (a JSON body of about 250 KB) every later page buffer comes from the
/// heap arenas, which keep what they grew to. In a drain of 1,000,000 the
/// worker's RSS stepped from 25 to 41–43 MiB; with the threshold fixed it
/// moved between 28 and 34 MiB and ended where it began (docs/benchmarks.md,
/// "Issue 13, eighth session").
/// `MALLOC_MMAP_THRESHOLD_` in the environment does the same without a build.
fn return_large_buffers_to_the_kernel() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: mallopt sets a process-wide allocator parameter under
        // glibc's own lock; it touches no memory of ours.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) } != 1 {
            tracing::warn!("could not fix malloc's mmap threshold; large buffers may stay in the heap");
        }
    }
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
