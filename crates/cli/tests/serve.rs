//! Tier 4: `phi3 serve` as a real process on 127.0.0.1, driven over real
//! sockets: the OpenAI endpoints, concurrency, malformed requests,
//! disconnects, API keys and shutdown.

mod serve_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serve_common::Server;

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "phi3",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": content}
        ],
        "temperature": 0,
        "max_tokens": 12,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The reply text and finish reason of a streamed chat.
fn streamed_text(events: &[String]) -> (String, String) {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut text = String::new();
    let mut finish = String::new();
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
        if let Some(c) = v["choices"][0]["text"].as_str() {
            text.push_str(c);
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, finish)
}

#[test]
fn chat_and_completions_whole_and_streamed() {
    let s = Server::start(&["--parallel", "2"]);
    assert_eq!(s.get("/health").1["status"], "ok");
    let (status, models) = s.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["id"], "model");
    assert_eq!(s.get("/v1/models/model").0, 200);
    assert_eq!(s.get("/v1/models/other").0, 404);

    let (status, whole) = s.post("/v1/chat/completions", &chat("Name a river.", json!({})));
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let finish = whole["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length");
    let usage = &whole["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 10 && c <= 12 && (finish == "stop" || c == 12));
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), p + c);

    // streamed: the same greedy answer, a role chunk first, usage at the end
    let events = s.stream(
        "/v1/chat/completions",
        &chat(
            "Name a river.",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    );
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert!(first["usage"].is_null());
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], c);
    assert_eq!(
        usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"],
        p - 1,
        "the repeated prompt came from the prefix cache"
    );
    assert_eq!(streamed_text(&events), (text.clone(), finish.to_string()));

    // stop strings cut the text; max_tokens gives "length"
    if let Some(cut) = text.char_indices().nth(3).map(|(i, _)| i).filter(|&i| i > 0) {
        let stop = text[cut..].chars().next().unwrap().to_string();
        let (_, v) = s.post(
            "/v1/chat/completions",
            &chat("Name a river.", json!({"stop": [stop.clone()]})),
        );
        let got = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(got, &text[..text.find(&stop).unwrap()]);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }
    let (_, v) = s.post("/v1/chat/completions", &chat("Name a river.", json!({"max_tokens": 2})));
    if v["choices"][0]["finish_reason"] == "length" {
        assert_eq!(v["usage"]["completion_tokens"], 2);
    }

    // logprobs: the chosen token is the most likely under greedy sampling
    let (_, v) = s.post(
        "/v1/chat/completions",
        &chat(
            "Name a river.",
            json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 4}),
        ),
    );
    let entries = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert!(!entries.is_empty());
    for e in entries {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["logprob"], e["logprob"]);
        assert!(e["logprob"].as_f64().unwrap() <= 0.0);
    }

    // the completions API, whole and streamed, with a seed
    let body = json!({"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0.9, "seed": 7, "logprobs": 2});
    let (status, v) = s.post("/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert_eq!(
        v["choices"][0]["logprobs"]["tokens"].as_array().unwrap().len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    assert_eq!(
        streamed_text(&s.stream("/v1/completions", &streamed)).0,
        text,
        "the same seed, the same text"
    );
    // token ids as the prompt
    let (status, _) = s.post("/v1/completions", &json!({"prompt": [1, 450, 4996], "max_tokens": 2}));
    assert_eq!(status, 200);
}

#[test]
fn sixteen_clients_at_once_get_their_answers_alone() {
    let s = Server::start(&["--parallel", "4", "--queue", "16"]);
    let questions: Vec<String> = (0..16)
        .map(|i| format!("Question {i}: what is {} plus {}?", i * 7, i + 3))
        .collect();
    let request = |i: usize| chat(&questions[i], json!({"max_tokens": 6 + i % 5, "stream": i % 2 == 1}));
    let answer = |s: &Server, i: usize| -> (String, String) {
        if i % 2 == 1 {
            streamed_text(&s.stream("/v1/chat/completions", &request(i)))
        } else {
            let (status, v) = s.post("/v1/chat/completions", &request(i));
            assert_eq!(status, 200, "{v}");
            let c = &v["choices"][0];
            (
                c["message"]["content"].as_str().unwrap().to_string(),
                c["finish_reason"].as_str().unwrap().to_string(),
            )
        }
    };
    let together: Vec<(String, String)> = std::thread::scope(|scope| {
        let (s, answer) = (&s, &answer);
        let handles: Vec<_> = (0..16).map(|i| scope.spawn(move || answer(s, i))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // batched rows compute exactly what a lone request computes
    for (i, got) in together.iter().enumerate() {
        assert_eq!(got, &answer(&s, i), "request {i}");
    }
    let health = s.get("/health").1;
    assert_eq!(
        (health["running"].as_u64(), health["waiting"].as_u64()),
        (Some(0), Some(0))
    );
}

fn error_of(v: &Value) -> (&str, &str) {
    let e = &v["error"];
    (e["type"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""))
}

#[test]
fn malformed_requests_get_clear_errors_and_the_server_goes_on() {
    let s = Server::start(&["--max-body", "64K", "--max-tokens", "100"]);
    let cases: Vec<(&[u8], u16, &str)> = vec![
        (b"{\"messages\": [", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"[1, 2]", 400, "JSON object"),
        (b"{\"messages\": \"hi\"}", 400, "'messages' must be a list of messages"),
        (b"{\"max_tokens\": 5}", 400, "'messages' is required"),
        (b"{\"messages\": []}", 400, "at least one message"),
        (b"{\"messages\": [{\"content\": \"hi\"}]}", 400, "needs a 'role'"),
        (b"{\"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}]}", 400, "unknown role 'wizard'"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", 400, "'content' must be"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", 400, "'image_url' are not supported"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": \"hot\"}", 400, "'temperature' must be a number"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": 7}", 400, "between 0 and 2"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 1000000000000}", 400, "at most 100"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": -3}", 400, "'max_tokens' must be a non-negative integer"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"n\": 2}", 400, "only n = 1"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"tools\": []}", 400, "'tools' is not supported"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"frobnicate\": 1}", 400, "Unrecognized request argument supplied: frobnicate"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": [1]}", 400, "'stop' must be"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"logit_bias\": {\"abc\": 1}}", 400, "not a token id"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"logit_bias\": {\"99999999\": 1}}", 400, "outside the vocabulary"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"top_logprobs\": 2}", 400, "needs 'logprobs': true"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stream_options\": {\"include_usage\": true}}", 400, "needs 'stream': true"),
        (b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}", 400, "not valid UTF-8"),
    ];
    for (body, status, needle) in &cases {
        let (got, v) = s.post_raw("/v1/chat/completions", body, &[]);
        let (kind, message) = error_of(&v);
        assert_eq!(got, *status, "{}: {v}", String::from_utf8_lossy(body));
        assert_eq!(kind, "invalid_request_error", "{v}");
        assert!(message.contains(needle), "{}: {message}", String::from_utf8_lossy(body));
    }
    // completions-specific
    let (got, v) = s.post("/v1/completions", &json!({"prompt": ["a", "b"]}));
    assert!(got == 400 && error_of(&v).1.contains("one prompt per request"), "{v}");
    let (got, v) = s.post("/v1/completions", &json!({"prompt": [1, 99999999]}));
    assert!(got == 400 && error_of(&v).1.contains("outside the vocabulary"), "{v}");
    let (got, v) = s.post("/v1/completions", &json!({"prompt": "x ".repeat(600)}));
    assert_eq!(got, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["param"], "prompt");
    assert!(
        error_of(&v).1.contains("phi3 serve --ctx"),
        "names the limit's setting: {v}"
    );
    let (got, v) = s.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 0}));
    assert!(
        got == 400 && error_of(&v).1.contains("'max_tokens' is 0; it must be at least 1"),
        "{v}"
    );
    // a huge body: 413 from its declared length, before the server reads it
    // (sent by hand: a client still writing when the server answers and
    // closes would see a broken pipe instead of the answer)
    let mut raw = TcpStream::connect(&s.addr).unwrap();
    write!(
        raw,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{{\"messages\": [{{\"role\": \"user\", \"content\": \"aaaa"
    )
    .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("bytes\"") {
        match raw.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("limit of 65536 bytes"), "{answer}");
    // unknown routes
    assert_eq!(s.get("/v1/nothing").0, 404);
    // garbage that is not HTTP at all, and a request cut off mid-body
    let mut raw = TcpStream::connect(&s.addr).unwrap();
    raw.write_all(b"\x00\x01\x02 not http\r\n\r\n").unwrap();
    drop(raw);
    let mut raw = TcpStream::connect(&s.addr).unwrap();
    raw.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"messages\":")
        .unwrap();
    drop(raw);
    // and everyone else is still served
    let (status, v) = s.post("/v1/chat/completions", &chat("Still there?", json!({})));
    assert_eq!(status, 200, "{v}");
}

/// Sends a chat request by hand on a connection the caller will drop.
fn post_by_hand(s: &Server, body: &Value) -> TcpStream {
    let body = body.to_string();
    let mut raw = TcpStream::connect(&s.addr).unwrap();
    write!(
        raw,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        s.addr,
        body.len()
    )
    .unwrap();
    raw
}

/// /health once nothing runs or waits (within 10 s).
fn when_idle(s: &Server) -> Value {
    let t0 = Instant::now();
    loop {
        let h = s.get("/health").1;
        if h["running"] == 0 && h["waiting"] == 0 {
            return h;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the slot stayed busy: {h}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_client_that_leaves_frees_its_slot() {
    let s = Server::start(&["--parallel", "1"]);
    let long = |extra: Value| {
        let mut body = json!({"max_tokens": 450, "temperature": 1, "logit_bias": {"32000": -100, "32007": -100}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        chat("Tell me a long story.", body)
    };
    // mid-stream
    let mut raw = post_by_hand(&s, &long(json!({"stream": true, "seed": 1})));
    let mut first = [0u8; 512];
    let n = raw.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).contains("200 OK"));
    drop(raw);
    // the only slot is freed as soon as the server notices, not after 450 tokens
    let h = when_idle(&s);
    assert_eq!(h["requests"]["cancelled"], 1, "{h}");
    assert!(h["tokens"]["generated"].as_u64().unwrap() < 450, "{h}");
    // while waiting for a whole (non-streamed) answer
    let raw = post_by_hand(&s, &long(json!({"seed": 2})));
    while s.get("/health").1["running"] == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(raw);
    let h = when_idle(&s);
    assert_eq!(h["requests"]["cancelled"], 2, "{h}");
    let (status, _) = s.post("/v1/chat/completions", &chat("Hello?", json!({})));
    assert_eq!(status, 200);
}

#[test]
fn an_api_key_guards_the_api() {
    let s = Server::start(&["--api-key", "sesame"]);
    let body = chat("Hi", json!({})).to_string();
    let (status, v) = s.post_raw("/v1/chat/completions", body.as_bytes(), &[]);
    assert_eq!(status, 401);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let (status, _) = s.post_raw(
        "/v1/chat/completions",
        body.as_bytes(),
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(status, 401);
    let (status, _) = s.post_raw(
        "/v1/chat/completions",
        body.as_bytes(),
        &[("Authorization", "Bearer sesame")],
    );
    assert_eq!(status, 200);
    assert_eq!(s.get("/health").0, 200, "health needs no key");
}

#[test]
fn sigterm_lets_running_requests_finish() {
    let mut s = Server::start(&["--parallel", "1"]);
    let body = chat(
        "Count to fifty.",
        json!({"stream": true, "max_tokens": 60, "temperature": 1, "seed": 3}),
    );
    let url = format!("{}/v1/chat/completions", s.base);
    let reader = std::thread::spawn(move || {
        let resp = ureq::post(&url).send_json(body).unwrap();
        BufReader::new(resp.into_reader())
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect::<Vec<_>>()
    });
    // wait until the request runs, then ask the server to stop
    let t0 = Instant::now();
    while s.get("/health").1["running"] == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    let events = reader.join().unwrap();
    let (_, finish) = streamed_text(&events);
    assert!(finish == "stop" || finish == "length", "finished normally: {finish}");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status}");
    // nothing listens any more
    assert!(TcpStream::connect(&s.addr).is_err());
}

#[test]
fn bench_serve_measures_concurrent_streams() {
    let dir = tempfile::tempdir().unwrap();
    let model = serve_common::chat_model(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_phi3"))
        .args([
            "bench-serve",
            "-m",
            model.to_str().unwrap(),
            "--streams",
            "1,3",
            "--requests",
            "2",
            "-n",
            "5",
        ])
        .args(["--ctx", "256", "--rounds", "3", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (r, streams) in results.iter().zip([1u64, 3]) {
        assert_eq!(r["streams"], streams);
        assert_eq!(r["requests"], streams * 2);
        // stop tokens are banned: every request generates all its tokens
        assert_eq!(r["completion_tokens"], streams * 2 * 5);
        assert!(r["aggregate_tokens_per_second"].as_f64().unwrap() > 0.0);
        assert!(r["ttft_median_seconds"].as_f64().unwrap() > 0.0);
        // every round kept, the top-level figures their medians
        let rounds = r["rounds"].as_array().unwrap();
        assert_eq!(rounds.len(), 3);
        let mut wall: Vec<f64> = rounds.iter().map(|x| x["wall_seconds"].as_f64().unwrap()).collect();
        wall.sort_by(f64::total_cmp);
        assert_eq!(r["wall_seconds"].as_f64().unwrap(), wall[1]);
        for x in rounds {
            assert_eq!(x["completion_tokens"], streams * 2 * 5);
        }
    }
}
