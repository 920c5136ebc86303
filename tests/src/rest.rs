//! A small REST client for the API.

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Calls `/api` on one node as one user.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Rest {
    pub fn new(addr: &str, token: Option<&str>) -> Self {
        Self { http: reqwest::Client::new(), base: format!("http://{addr}"), token: token.map(str::to_owned) }
    }

    /// Sends a request; returns the status and the JSON body (Null when empty).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("JSON body") };
        (status, body)
    }

    /// A GET that tolerates the server not answering (yet): `None` then.
    pub async fn try_get(&self, path: &str) -> Option<StatusCode> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request.send().await.ok().map(|response| response.status())
    }

    /// A POST that tolerates the server being unreachable: `None` then.
    pub async fn try_post(&self, path: &str, body: Value) -> Option<(StatusCode, Value)> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.ok()?;
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        Some((status, body))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a chat and returns its id; panics unless 201/200.
    pub async fn create_chat(&self, kind: &str, members: &[&str]) -> String {
        let (status, body) = self.post("/api/chats", serde_json::json!({ "type": kind, "members": members })).await;
        assert!(status.is_success(), "create chat: {status} {body}");
        body["id"].as_str().expect("chat id").to_owned()
    }
}
