//! Helpers for the operations tests: Prometheus scrapes, admin tokens, and a
//! local HTTP receiver standing in for the host app's push webhook.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{JWT_SECRET, TestEnv};

/// Fetches `http://{addr}/metrics` as text.
pub async fn scrape(addr: &str) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics")).await.expect("scrape /metrics");
    assert!(response.status().is_success(), "GET /metrics: {}", response.status());
    response.text().await.expect("metrics body")
}

/// The value of one series in a scrape: `name` exactly, with these labels
/// (all of them, in any order; `&[]` for none). `None` if absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            return None;
        }
        let present: Vec<&str> = series_labels.split(',').filter(|l| !l.is_empty()).collect();
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        if present.len() != wanted.len() || !wanted.iter().all(|w| present.contains(&w.as_str())) {
            return None;
        }
        value.parse().ok()
    })
}

impl TestEnv {
    /// A token with the `admin` role claim.
    pub fn admin_token(&self, user: &str) -> String {
        let request = courier_shared::auth::DevTokenRequest {
            user_id: user.into(),
            role: Some("admin".into()),
            ttl: Duration::from_secs(3600),
            ..Default::default()
        };
        courier_shared::auth::sign_hs256(JWT_SECRET, &request).expect("sign")
    }
}

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct WebhookCall {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the receiver answered.
    pub status: u16,
}

impl WebhookCall {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

/// An HTTP server on 127.0.0.1:0 that records every POST and answers with
/// statuses from a script (then 200).
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<WebhookCall>>>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Receiver {
    calls: Arc<Mutex<Vec<WebhookCall>>>,
    script: Arc<Mutex<Vec<u16>>>,
}

impl WebhookReceiver {
    /// Answers the first requests with `script`'s statuses, in order, then 200.
    pub async fn start(script: &[u16]) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut reversed = script.to_vec();
        reversed.reverse();
        let state = Receiver { calls: calls.clone(), script: Arc::new(Mutex::new(reversed)) };
        let app = Router::new().route("/push", post(record)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind webhook receiver");
        let addr = listener.local_addr().expect("receiver address");
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        });
        Self { addr, calls, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}/push", self.addr)
    }

    pub fn calls(&self) -> Vec<WebhookCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn record(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = receiver.script.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or(200);
    receiver.calls.lock().unwrap_or_else(|p| p.into_inner()).push(WebhookCall { headers, body, status });
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}
