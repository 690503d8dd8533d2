//! Starting `phi3 serve` on a tiny model and talking to it, for the
//! end-to-end server tests.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// A 2-layer random model with the real Phi-3 vocabulary and chat template.
pub fn chat_model(dir: &Path) -> PathBuf {
    let base = phi3_model::Model::open(testdata().join("models/phi-3-mini-4k"))
        .unwrap()
        .config;
    let vocab = testdata().join("../../shared/testdata/tokenizer/ggml-vocab-phi-3.gguf");
    phi3_eval::synth::random_chat_model(&base, &vocab, dir).unwrap()
}

/// A running `phi3 serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub addr: String,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let model = chat_model(dir.path());
        let mut s = Server::start_with(&model, extra);
        s._dir = Some(dir);
        s
    }

    pub fn start_with(model: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_phi3"))
            .args(["serve", "-m", model.to_str().unwrap(), "--port", "0"])
            .args(extra)
            .env_remove("PHI3_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("phi3 serve ended before listening: {seen}")
            };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(a) = line.strip_prefix("listening on http://") {
                break a.to_string();
            }
        };
        // keep draining stderr so the server never blocks on it
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base: format!("http://{addr}"),
            addr,
            _dir: None,
        }
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string().as_bytes(), &[])
    }

    pub fn post_raw(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = ureq::post(&format!("{}{path}", self.base)).set("Content-Type", "application/json");
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let resp = match req.send_bytes(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
        )
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = match ureq::get(&format!("{}{path}", self.base)).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{path}: {e}"),
        };
        (resp.status(), resp.into_json().unwrap())
    }

    /// The data of every server-sent event of a streamed request.
    pub fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let resp = ureq::post(&format!("{}{path}", self.base))
            .send_json(body.clone())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.header("content-type"), Some("text/event-stream"));
        let mut events = vec![];
        for line in BufReader::new(resp.into_reader()).lines() {
            if let Some(d) = line.unwrap().strip_prefix("data: ") {
                events.push(d.to_string());
            }
        }
        events
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
