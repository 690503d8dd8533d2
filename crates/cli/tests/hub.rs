//! Model downloads against a local server speaking the hub's file protocol
//! (`/{repo}/resolve/{revision}/{file}` with Range requests, ETag = SHA-256,
//! X-Repo-Commit): fresh download, resume after a cut connection, a
//! corrupted download detected, the offline cache hit.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

#[derive(Default)]
struct State {
    /// Close the first body response after this many bytes.
    cut_after: Option<usize>,
    /// Serve a body with one byte flipped (the ETag stays the true SHA-256).
    corrupt: bool,
    /// Range headers received.
    ranges: Vec<String>,
}

struct Server {
    url: String,
    state: Arc<Mutex<State>>,
}

fn serve(file: Vec<u8>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(State::default()));
    let st = state.clone();
    let sha: String = Sha256::digest(&file).iter().map(|b| format!("{b:02x}")).collect();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = Some(v.trim().to_string());
                }
            }
            let path = request.split(' ').nth(1).unwrap_or("");
            if path != "/owner/tiny/resolve/main/model.gguf" {
                let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            let mut st = st.lock().unwrap();
            let (start, end) = match &range {
                Some(r) => {
                    st.ranges.push(r.clone());
                    let (a, b) = r.split_once('-').unwrap();
                    let a: usize = a.parse().unwrap();
                    let b: usize = if b.is_empty() {
                        file.len() - 1
                    } else {
                        b.parse().unwrap()
                    };
                    (a, b.min(file.len() - 1))
                }
                None => (0, file.len() - 1),
            };
            let mut body = file[start..=end].to_vec();
            if st.corrupt && body.len() > 10 {
                body[5] ^= 0xff;
            }
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{end}/{}\r\nContent-Length: {}\r\n\
                 ETag: \"{sha}\"\r\nX-Repo-Commit: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                file.len(),
                body.len(),
                "a".repeat(40)
            );
            let _ = conn.write_all(head.as_bytes());
            let is_body = body.len() > 1;
            let cut = if is_body { st.cut_after.take() } else { None };
            match cut {
                Some(n) => {
                    let _ = conn.write_all(&body[..n]);
                } // then drop the connection mid-body
                None => {
                    let _ = conn.write_all(&body);
                }
            }
        }
    });
    Server { url, state }
}

fn fixture() -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models/phi-3.5-mini-gguf-py.gguf"))
        .unwrap()
}

fn phi3(home: &Path, endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phi3"))
        .args(args)
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const REF: &str = "owner/tiny/model.gguf";

#[test]
fn fresh_download_lands_in_the_cache_and_is_listed() {
    let home = tempfile::tempdir().unwrap();
    let data = fixture();
    let server = serve(data.clone());
    let o = phi3(home.path(), &server.url, &["pull", REF]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let path = PathBuf::from(text(&o.stdout).trim());
    assert!(
        path.starts_with(home.path().join("hub/models--owner--tiny/snapshots")),
        "{}",
        path.display()
    );
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let o = phi3(home.path(), &server.url, &["list"]);
    assert!(text(&o.stdout).contains("owner/tiny/model.gguf"), "{}", text(&o.stdout));
    // the same reference runs, and works offline from the cache
    let o = phi3(
        home.path(),
        "http://127.0.0.1:9",
        &[
            "run",
            "-m",
            REF,
            "--prompt-ids",
            "5,6",
            "-n",
            "3",
            "--greedy",
            "--print-ids",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim().split(',').count(), 3);
}

#[test]
fn a_cut_download_resumes() {
    let home = tempfile::tempdir().unwrap();
    let data = fixture();
    let server = serve(data.clone());
    server.state.lock().unwrap().cut_after = Some(data.len() / 3);
    let o = phi3(home.path(), &server.url, &["pull", REF]);
    assert!(
        !o.status.success(),
        "the cut download must fail: {} {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(text(&o.stderr).contains("could not download"), "{}", text(&o.stderr));
    assert!(
        phi3(home.path(), &server.url, &["list"]).stdout.is_empty(),
        "nothing half-written is listed as complete"
    );
    let o = phi3(home.path(), &server.url, &["pull", REF]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(text(&o.stdout).trim()).unwrap(), data);
    let ranges = server.state.lock().unwrap().ranges.clone();
    let resumed = ranges.iter().any(|r| {
        r.split('-')
            .next()
            .and_then(|a| a.parse::<usize>().ok())
            .is_some_and(|a| a > 0)
    });
    assert!(resumed, "the second pull asked for the rest only: {ranges:?}");
}

#[test]
fn a_corrupted_download_is_detected_and_removed() {
    let home = tempfile::tempdir().unwrap();
    let server = serve(fixture());
    server.state.lock().unwrap().corrupt = true;
    let o = phi3(home.path(), &server.url, &["pull", REF]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("corrupted"), "{}", text(&o.stderr));
    assert!(
        phi3(home.path(), &server.url, &["list"]).stdout.is_empty(),
        "the bad file is not left in the cache"
    );
}

#[test]
fn missing_repos_and_offline_misses_say_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let server = serve(fixture());
    let o = phi3(home.path(), &server.url, &["pull", "owner/nothing/model.gguf"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("could not download owner/nothing/model.gguf"),
        "{}",
        text(&o.stderr)
    );
    let o = phi3(
        home.path(),
        "http://127.0.0.1:9",
        &["run", "-m", REF, "--prompt-ids", "1"],
    );
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("not in the cache") && err.contains("phi3 pull owner/tiny/model.gguf"),
        "{err}"
    );
}

#[test]
fn a_full_disk_fails_clearly_and_leaves_nothing_complete() {
    // a 200 KiB filesystem for a 460 KB model (needs root to mount; skipped otherwise)
    let home = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=200k", "tmpfs"])
        .arg(home.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("cannot mount a small tmpfs here: skipping the full-disk test");
        return;
    }
    let server = serve(fixture());
    let o = phi3(home.path(), &server.url, &["pull", REF]);
    let listed = phi3(home.path(), &server.url, &["list"]);
    let _ = Command::new("umount").arg(home.path()).status();
    assert!(!o.status.success(), "a full disk must fail the download");
    let err = text(&o.stderr);
    assert!(
        err.contains("could not download") && err.to_lowercase().contains("space"),
        "{err}"
    );
    assert!(listed.stdout.is_empty(), "nothing half-written is listed as complete");
}
