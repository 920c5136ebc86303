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

    /// Address of the admin API (`/admin/...`), a listener of its own so it is
    /// not reachable where clients are; loopback by default. Tokens still need
    /// the admin role. docs/operations.md.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:8081")]
    pub admin_addr: SocketAddr,

    /// Set TCP_NODELAY on client sockets (default on). Off, every second small
    /// frame written back to back waits ~40 ms for the client's delayed ACK;
    /// the switch exists so the benchmark can show that in one run.
    #[arg(long, env = "TCP_NODELAY", default_value_t = true, action = clap::ArgAction::Set, hide = true)]
    pub tcp_nodelay: bool,

    /// This node's id: names its push queue and its presence rows. Generated when absent;
    /// set it to keep the id across restarts (a restarted node then clears its old rows).
    #[arg(long, env = "NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// Largest WebSocket text frame accepted; bigger ones get a `payload_too_large` error frame.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = 128 * 1024)]
    pub max_frame_bytes: usize,

    /// Pushes queued for one connection. Deliveries beyond it are read from
    /// PostgreSQL later; other pushes beyond it close the connection (code 4008).
    #[arg(long, env = "SEND_QUEUE_FRAMES", default_value_t = 1024)]
    pub send_queue_frames: usize,

    /// A frame the client does not take within this long means it stopped
    /// reading: the connection is closed with code 4008.
    #[arg(long, env = "WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Requests (client frames other than acks, and REST calls) one user may make per second; 0 = no limit.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 50)]
    pub rate_limit_per_second: u32,

    /// Burst above RATE_LIMIT_PER_SECOND a user may make at once.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 200)]
    pub rate_limit_burst: u32,

    /// Typing events (`typing:start`, `typing:stop`) one user may send per
    /// TYPING_RATE_WINDOW on a node, on top of RATE_LIMIT_PER_SECOND: a
    /// bucket of this many, one back every window / limit. More get
    /// `rate_limited` and go nowhere. 0 = no typing limit.
    #[arg(long, env = "TYPING_RATE_LIMIT", default_value_t = 10)]
    pub typing_rate_limit: u32,

    /// The window of TYPING_RATE_LIMIT.
    #[arg(long, env = "TYPING_RATE_WINDOW", default_value = "5s", value_parser = parse_duration)]
    pub typing_rate_window: Duration,

    /// Most sends stored in one database transaction.
    #[arg(long, env = "SEND_BATCH_MAX", default_value_t = 256)]
    pub send_batch_max: usize,

    /// Send transactions in flight at once, each on a connection of its own
    /// (beside the DATABASE_MAX_CONNECTIONS pool; see docs/scaling.md).
    #[arg(long, env = "SEND_BATCH_CONCURRENCY", default_value_t = 4)]
    pub send_batch_concurrency: usize,

    /// How long a client has to acknowledge `message:receive` before it is sent again
    /// (then with exponential backoff, up to ACK_TIMEOUT_MAX).
    #[arg(long, env = "ACK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ack_timeout: Duration,

    /// Longest wait between two resends of an unacknowledged message.
    #[arg(long, env = "ACK_TIMEOUT_MAX", default_value = "2m", value_parser = parse_duration)]
    pub ack_timeout_max: Duration,

    /// Messages pushed to one connection and not yet acknowledged, at most; more
    /// wait in PostgreSQL until the client catches up.
    #[arg(long, env = "MAX_UNACKED", default_value_t = 1024)]
    pub max_unacked: usize,

    /// Devices one user may have (a connection from one more is refused with
    /// `too_many_devices`; `DELETE /api/devices/{id}` makes room).
    #[arg(long, env = "MAX_DEVICES_PER_USER", default_value_t = 10)]
    pub max_devices_per_user: usize,

    /// How long after sending its sender may edit a message (`message:edit`).
    #[arg(long, env = "EDIT_WINDOW", default_value = "48h", value_parser = parse_duration)]
    pub edit_window: Duration,

    /// How long after sending its sender may delete a message for everyone.
    #[arg(long, env = "DELETE_WINDOW", default_value = "48h", value_parser = parse_duration)]
    pub delete_window: Duration,

    /// How long a message that arrived ahead of its predecessor waits for it
    /// before the connection reads the gap from PostgreSQL.
    #[arg(long, env = "REORDER_WAIT", default_value = "500ms", value_parser = parse_duration)]
    pub reorder_wait: Duration,

    /// How long a connection waits for its backlog drain to start or progress
    /// before asking a worker again.
    #[arg(long, env = "DRAIN_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub drain_wait: Duration,

    /// How often the node renews its presence lease (workers reap nodes silent for NODE_LEASE).
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Outbox rows older than this are published by the relay (the fast path missed them).
    #[arg(long, env = "OUTBOX_RELAY_AFTER", default_value = "2s", value_parser = parse_duration)]
    pub outbox_relay_after: Duration,

    /// How often the outbox relay looks for rows left behind.
    #[arg(long, env = "OUTBOX_RELAY_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub outbox_relay_interval: Duration,

    /// Origins whose pages may use the API and `/socket.io/` from a browser
    /// (CORS), comma separated, e.g. `https://app.example.com`; `*` allows any.
    /// Empty: only pages served by Courier itself (tokens travel in headers or
    /// the handshake, never in cookies).
    #[arg(long, env = "CORS_ALLOW_ORIGINS", value_delimiter = ',')]
    pub cors_allow_origins: Vec<String>,

    /// Serve `POST /api/dev/token`, which signs a token for any user id: for
    /// trying the web page at `/`. Never in production (it 404s when off).
    /// Without JWT_SECRET it signs with the public built-in secret.
    #[arg(long, env = "DEV_TOKENS")]
    pub dev_tokens: bool,

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
