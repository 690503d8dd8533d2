//! The HTTP routes: the two generation endpoints, models, health, the API
//! key check, and the turn of scheduler events into responses or streams.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use phi3_runtime::{Event, GenerateOptions, Job, SubmitError};
use phi3_tokenizer::EncodeOptions;

use crate::error::ApiError;
use crate::request::{ChatRequest, CompletionRequest, Params, Prompt};
use crate::response::{finish_reason, Api, Envelope, Logprobs, Usage};
use crate::AppState;

type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_api_key));
    Router::new()
        .route("/health", get(health))
        .merge(v1)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_declared_oversize,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(state)
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "internal error while handling the request",
    )
    .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::status(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

/// A body whose declared length is over the limit is refused before any of
/// it is read (bodies without a length are cut off at the limit as they come).
async fn refuse_declared_oversize(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = state.config.max_body_bytes;
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit).into_response();
    }
    next.run(req).await
}

fn too_large(limit: usize) -> ApiError {
    ApiError::status(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        format!("the request body is larger than this server's limit of {limit} bytes"),
    )
}

/// `Authorization: Bearer KEY` on every /v1 route when the server has a key.
async fn require_api_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // compare without an early exit, so timing does not reveal the key
        let ok = given.is_some_and(|g| {
            g.len() == key.len() && g.bytes().zip(key.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        if !ok {
            let mut e = ApiError::status(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "a valid API key is required: send 'Authorization: Bearer KEY'",
            );
            e.code = Some("invalid_api_key");
            return e.into_response();
        }
    }
    next.run(req).await
}

async fn health(State(state): State<Shared>) -> Json<Value> {
    let s = state.scheduler.stats();
    Json(json!({
        "status": "ok",
        "model": state.config.model_id,
        "slots": state.scheduler.config().slots,
        "running": s.running,
        "waiting": s.waiting,
        "requests": {"finished": s.finished, "cancelled": s.cancelled, "failed": s.failed},
        "tokens": {"prompt": s.prompt_tokens, "cached": s.cached_tokens, "generated": s.generated_tokens},
    }))
}

fn model_card(state: &AppState) -> Value {
    json!({
        "id": state.config.model_id,
        "object": "model",
        "created": state.created,
        "owned_by": "phi3",
        "context_length": state.scheduler.config().session.context,
    })
}

async fn models(State(state): State<Shared>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_card(&state)]}))
}

async fn model(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if id != state.config.model_id {
        let mut e = ApiError::status(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "the model '{id}' does not exist; this server has '{}'",
                state.config.model_id
            ),
        );
        e.code = Some("model_not_found");
        return Err(e);
    }
    Ok(Json(model_card(&state)))
}

/// The body, or the error a client should see (too large: 413).
fn body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(limit)
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

async fn chat_completions(
    State(state): State<Shared>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(raw, state.config.max_body_bytes)?;
    let req = ChatRequest::parse(&raw, state.config.max_tokens_cap)?;
    let prompt = phi3_runtime::chat::render_prompt(&state.tokenizer, &state.template, &req.messages)
        .map_err(|e| ApiError::invalid("messages", format!("the chat template failed: {e}")))?;
    generate(state, Api::Chat, prompt, req.params).await
}

async fn completions(State(state): State<Shared>, raw: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let raw = body(raw, state.config.max_body_bytes)?;
    let req = CompletionRequest::parse(&raw, state.config.max_tokens_cap)?;
    let prompt = match req.prompt {
        Prompt::Tokens(ids) => ids,
        Prompt::Text(text) => state.tokenizer.encode(
            &text,
            EncodeOptions {
                add_special: true,
                parse_special: true,
            },
        ),
    };
    generate(state, Api::Completions, prompt, req.params).await
}

/// Sets the request's cancel flag when dropped: when axum drops a handler
/// or a response stream because the client went away, its slot is freed.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn submit_error(e: SubmitError, api: Api) -> ApiError {
    let prompt_field = if api == Api::Chat { "messages" } else { "prompt" };
    match e {
        SubmitError::QueueFull { .. } | SubmitError::ShuttingDown => {
            ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "server_error", e.to_string()).with_code("server_busy")
        }
        SubmitError::PromptTooLong { .. } => {
            // the runtime's message, plus where the limit comes from
            let message = format!("{e} (each slot's context is set by `phi3 serve --ctx`)");
            ApiError::invalid(prompt_field, message).with_code("context_length_exceeded")
        }
        SubmitError::EmptyPrompt => ApiError::invalid(prompt_field, e.to_string()),
        SubmitError::TokenOutOfRange { .. } => ApiError::bad_request(e.to_string()),
        SubmitError::Sampler(_) => ApiError::bad_request(e.to_string()),
    }
}

async fn generate(state: Shared, api: Api, prompt: Vec<u32>, params: Params) -> Result<Response, ApiError> {
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(cancel.clone());
    let (tx, rx) = unbounded_channel();
    let mut stop_strings = params.stop.clone();
    stop_strings.retain(|s| !s.is_empty());
    let job = Job {
        prompt,
        sampler: params.sampler.clone(),
        options: GenerateOptions {
            max_tokens: params.max_tokens.unwrap_or(state.config.max_tokens_cap),
            stop_ids: state.stop_ids.clone(),
            stop_strings,
            cancel: Some(cancel),
        },
        logprobs: params.logprobs,
        sink: Box::new(move |e| tx.send(e).is_ok()),
    };
    state.scheduler.submit(job).map_err(|e| submit_error(e, api))?;
    let envelope = Envelope {
        api,
        id: format!(
            "{}-{:x}{:08x}",
            if api == Api::Chat { "chatcmpl" } else { "cmpl" },
            state.created,
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: state.config.model_id.clone(),
    };
    if params.stream {
        let events = stream_events(state, envelope, rx, params.include_usage, guard);
        let sse = Sse::new(events).keep_alive(KeepAlive::default());
        return Ok(sse.into_response());
    }
    whole_response(&state, &envelope, rx, guard).await
}

async fn whole_response(
    state: &AppState,
    envelope: &Envelope,
    mut rx: UnboundedReceiver<Event>,
    _guard: CancelOnDrop,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut logprobs = Logprobs::default();
    let mut wanted_logprobs = false;
    let mut usage = Usage::default();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Started { cached_tokens, .. } => usage.cached_tokens = cached_tokens,
            Event::Token {
                token,
                text: piece,
                logprobs: lp,
            } => {
                text.push_str(&piece);
                if let Some(lp) = lp {
                    wanted_logprobs = true;
                    logprobs.push(envelope.api, &state.tokenizer, token, &lp);
                }
            }
            Event::Finished {
                finish,
                text: rest,
                prompt_tokens,
                completion_tokens,
                ..
            } => {
                text.push_str(&rest);
                usage.prompt_tokens = prompt_tokens;
                usage.completion_tokens = completion_tokens;
                let lp = wanted_logprobs.then(|| logprobs.take(envelope.api));
                let body = envelope.response(&text, lp, finish_reason(finish), usage);
                return Ok(Json(body).into_response());
            }
            Event::Failed(why) => return Err(failed(why)),
        }
    }
    Err(failed("the generator stopped without an answer".into()))
}

fn failed(why: String) -> ApiError {
    ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, "server_error", why)
}

/// Where a response stream stands.
struct StreamState {
    state: Shared,
    envelope: Envelope,
    rx: UnboundedReceiver<Event>,
    include_usage: bool,
    first: bool,
    done: bool,
    logprobs: Logprobs,
    usage: Usage,
    _guard: CancelOnDrop,
}

fn data(v: &Value) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(v.to_string()))
}

/// The server-sent events of a streamed response: a chunk per piece of
/// text, the finish reason, optionally the usage, then `[DONE]`.
fn stream_events(
    state: Shared,
    envelope: Envelope,
    rx: UnboundedReceiver<Event>,
    include_usage: bool,
    guard: CancelOnDrop,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let start = StreamState {
        state,
        envelope,
        rx,
        include_usage,
        first: true,
        done: false,
        logprobs: Logprobs::default(),
        usage: Usage::default(),
        _guard: guard,
    };
    stream::unfold(start, |mut s| async move {
        if s.done {
            return None;
        }
        let out = match s.rx.recv().await {
            None => {
                s.done = true;
                let e = failed("the generator stopped without an answer".into());
                vec![data(&e.body()), Ok(SseEvent::default().data("[DONE]"))]
            }
            Some(event) => next_chunks(&mut s, event),
        };
        Some((stream::iter(out), s))
    })
    .flatten()
}

fn next_chunks(s: &mut StreamState, event: Event) -> Vec<Result<SseEvent, Infallible>> {
    let api = s.envelope.api;
    let mut out = Vec::new();
    match event {
        Event::Started { cached_tokens, .. } => {
            s.usage.cached_tokens = cached_tokens;
            if api == Api::Chat {
                // the role comes first, as OpenAI sends it
                out.push(data(&s.envelope.chunk(true, Some(""), None, None)));
                s.first = false;
            }
        }
        Event::Token { token, text, logprobs } => {
            if let Some(lp) = &logprobs {
                s.logprobs.push(api, &s.state.tokenizer, token, lp);
            }
            if !text.is_empty() {
                let lp = (!s.logprobs.is_empty()).then(|| s.logprobs.take(api));
                out.push(data(&s.envelope.chunk(s.first, Some(&text), lp, None)));
                s.first = false;
            }
        }
        Event::Finished {
            finish,
            text,
            prompt_tokens,
            completion_tokens,
            ..
        } => {
            if !text.is_empty() || !s.logprobs.is_empty() {
                let lp = (!s.logprobs.is_empty()).then(|| s.logprobs.take(api));
                out.push(data(&s.envelope.chunk(s.first, Some(&text), lp, None)));
            }
            out.push(data(&s.envelope.chunk(false, None, None, Some(finish_reason(finish)))));
            s.usage.prompt_tokens = prompt_tokens;
            s.usage.completion_tokens = completion_tokens;
            if s.include_usage {
                out.push(data(&s.envelope.usage_chunk(s.usage)));
            }
            out.push(Ok(SseEvent::default().data("[DONE]")));
            s.done = true;
        }
        Event::Failed(why) => {
            out.push(data(&failed(why).body()));
            out.push(Ok(SseEvent::default().data("[DONE]")));
            s.done = true;
        }
    }
    out
}
