//! phi3's OpenAI-compatible HTTP server: `/v1/chat/completions`,
//! `/v1/completions` (streamed as server-sent events or whole),
//! `/v1/models` and `/health`, on top of the runtime's batch scheduler
//! (continuous batching, prefix caching, cancellation when a client leaves).

pub mod error;
pub mod request;
pub mod response;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use phi3_model::Model;
use phi3_runtime::{Scheduler, SchedulerConfig};
use phi3_tokenizer::{ChatTemplate, Tokenizer};

pub use routes::router;

/// What the command line decides about the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Required as `Authorization: Bearer KEY` on /v1 routes when set.
    pub api_key: Option<String>,
    /// The name clients see in /v1/models and responses.
    pub model_id: String,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for, and the limit of those
    /// that ask none.
    pub max_tokens_cap: usize,
    pub scheduler: SchedulerConfig,
    /// After a shutdown signal, how long running requests may go on before
    /// they are cancelled.
    pub shutdown_grace: Duration,
}

/// What every handler shares.
pub struct AppState {
    pub config: ServerConfig,
    pub scheduler: Scheduler,
    pub tokenizer: Arc<Tokenizer>,
    pub template: ChatTemplate,
    /// Tokens that end a reply (the model's and the vocabulary's).
    pub stop_ids: Vec<u32>,
    /// When the server started (seconds since the epoch), for /v1/models.
    pub created: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Model(#[from] phi3_model::ModelError),
}

impl AppState {
    pub fn new(
        config: ServerConfig,
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        template: ChatTemplate,
        stop_ids: Vec<u32>,
    ) -> Result<AppState, ServerError> {
        let scheduler = Scheduler::start(model, tokenizer.clone(), config.scheduler)?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(AppState {
            config,
            scheduler,
            tokenizer,
            template,
            stop_ids,
            created,
        })
    }
}

/// Serves until `shutdown` completes, then stops taking requests, lets
/// running ones finish for up to `shutdown_grace`, cancels the rest, and
/// returns once every connection is closed. `on_listening` gets the bound
/// address (port 0 picks a free one).
pub fn serve_blocking(
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    // the async side only moves bytes; the compute runs on the scheduler's
    // thread and the kernels' pool
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("phi3-http")
        .enable_all()
        .build()?;
    let state = Arc::new(state);
    rt.block_on(async {
        let addr = state.config.addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        on_listening(listener.local_addr()?);
        let closing = state.clone();
        let stopped = async move {
            shutdown.await;
            closing.scheduler.close();
            let grace = closing.config.shutdown_grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                closing.scheduler.abort();
            });
        };
        axum::serve(listener, router(state.clone()))
            .with_graceful_shutdown(stopped)
            .await?;
        Ok::<(), ServerError>(())
    })?;
    state.scheduler.shutdown(true);
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
