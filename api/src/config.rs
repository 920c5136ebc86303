//! `courier-api` settings, parsed once at start-up.

use std::{net::SocketAddr, time::Duration};

use courier_shared::{
    auth::JwtConfig,
    config::{CommonConfig, parse_duration},
};

#[derive(clap::Args, Debug, Clone)]
pub struct ApiConfig {
    #[command(flatten)]
    pub common: CommonConfig,

    #[command(flatten)]
    pub jwt: JwtConfig,

    /// Address the HTTP and WebSocket server listens on (port 0 picks a free one).
    #[arg(long, env = "API_ADDR", default_value = "0.0.0.0:8080")]
    pub api_addr: SocketAddr,

    /// This node's id: names its push queue and its presence rows. Generated when absent;
    /// set it to keep the id across restarts (a restarted node then clears its old rows).
    #[arg(long, env = "NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// Largest WebSocket text frame accepted; bigger ones get a `payload_too_large` error frame.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = 128 * 1024)]
    pub max_frame_bytes: usize,

    /// Frames queued for one connection before it counts as too slow and is closed (code 4008).
    #[arg(long, env = "SEND_QUEUE_FRAMES", default_value_t = 1024)]
    pub send_queue_frames: usize,

    /// Most sends stored in one database transaction.
    #[arg(long, env = "SEND_BATCH_MAX", default_value_t = 256)]
    pub send_batch_max: usize,

    /// Send transactions in flight at once.
    #[arg(long, env = "SEND_BATCH_CONCURRENCY", default_value_t = 4)]
    pub send_batch_concurrency: usize,

    /// How long to wait for in-flight work when stopping.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl ApiConfig {
    /// The node id, generated once if not configured.
    pub fn resolve_node_id(&mut self) -> String {
        self.node_id.get_or_insert_with(|| format!("api-{}", uuid::Uuid::now_v7().simple())).clone()
    }
}

fn parse_node_id(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid { Ok(text.to_owned()) } else { Err("use 1-64 characters from [A-Za-z0-9._-]".into()) }
}
