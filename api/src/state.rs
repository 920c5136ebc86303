//! What every request and connection handler shares.

use std::sync::Arc;

use courier_shared::{auth::JwtVerifier, broker::Broker};
use sqlx::PgPool;

use crate::{config::ApiConfig, send::SendBatcher};

/// Shared handles; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub config: ApiConfig,
    pub node_id: String,
    pub db: PgPool,
    pub broker: Broker,
    pub jwt: JwtVerifier,
    pub sends: SendBatcher,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self { inner: Arc::new(inner) }
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}
