//! Tier 4: the `phi3` binary driven as a user would, on the fixture models.

use std::path::PathBuf;
use std::process::{Command, Output};

use phi3_formats::SafetensorsModel;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

fn phi3(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phi3"))
        .args(args)
        .output()
        .expect("run phi3")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Reference ids from testdata/reference/<model>.safetensors.
fn ref_ids(model: &str, tensor: &str) -> Vec<u32> {
    let m = SafetensorsModel::open_files(&[testdata().join(format!("reference/{model}.safetensors"))]).unwrap();
    m.tensor(tensor)
        .unwrap()
        .bytes()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect()
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn run_prints_the_reference_greedy_ids() {
    for model in ["phi-3-mini-4k", "phi-3.5-mini", "phi-4-mini"] {
        let prompt = join(&ref_ids(model, "gen.prompt"));
        let want = join(&ref_ids(model, "gen.output"));
        let dir = testdata().join("models").join(model);
        let o = phi3(&[
            "run",
            "--model",
            dir.to_str().unwrap(),
            "--prompt-ids",
            &prompt,
            "-n",
            "32",
            "--greedy",
            "--print-ids",
            "--ignore-eos",
            // the reference numbers: the default f16 KV cache may flip near-ties
            "--kv-type",
            "f32",
        ]);
        assert!(o.status.success(), "{model}: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), want, "{model}");
        assert!(stderr(&o).contains("tok/s"), "speed is reported on stderr");
    }
}

#[test]
fn run_on_the_gguf_written_by_the_gguf_package() {
    let model = testdata().join("models/phi-3.5-mini-gguf-py.gguf");
    let prompt = join(&ref_ids("phi-3.5-mini", "gen.prompt"));
    let o = phi3(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "--prompt-ids",
        &prompt,
        "-n",
        "32",
        "--greedy",
        "--print-ids",
        "--kv-type",
        "f32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), join(&ref_ids("phi-3.5-mini", "gen.output")));
    assert!(stderr(&o).contains("re-prefilled 1 time"), "{}", stderr(&o));
}

#[test]
fn run_stops_at_the_models_stop_token() {
    // The fixtures' generation_config.json lists eos id 2; with this prompt
    // the greedy continuation of phi-3-mini-4k reaches id 2 at step 17.
    let model = testdata().join("models/phi-3-mini-4k");
    let m = model.to_str().unwrap();
    let ids = |o: &Output| -> Vec<u32> {
        stdout(o)
            .trim()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect()
    };
    let base = [
        "run",
        "-m",
        m,
        "--prompt-ids",
        "1,2,3",
        "-n",
        "40",
        "--greedy",
        "--print-ids",
    ];
    let all = phi3(&[&base[..], &["--ignore-eos"]].concat());
    assert!(all.status.success(), "{}", stderr(&all));
    let all = ids(&all);
    let at = all
        .iter()
        .position(|&t| t == 2)
        .expect("the continuation reaches the stop id");
    let stopped = phi3(&base);
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    assert_eq!(ids(&stopped), all[..at].to_vec());
    assert!(stderr(&stopped).contains("stopped: stop token"), "{}", stderr(&stopped));
}

#[test]
fn inspect_reports_the_model() {
    let model = testdata().join("models/phi-4-mini");
    let o = phi3(&["inspect", model.to_str().unwrap(), "--ctx", "100"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "6 query heads, 2 KV heads (group 3), head dim 16",
        "rotary:         12 of 16 dims",
        "LongRoPE (\"longrope\"), original context 32",
        "tied embedding: yes",
        "KV cache: 25.00 KiB (100 positions × 256 B per position, f16)",
        "F32",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let o = phi3(&["inspect", testdata().join("models/phi-3-mini-4k").to_str().unwrap()]);
    assert!(
        stdout(&o).contains("sliding window: 11 keys per query (KV cache holds 10 positions)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn convert_then_inspect_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let src = testdata().join("models/phi-3-medium-4k");
    let o = phi3(&[
        "convert",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "bf16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = phi3(&["inspect", out.to_str().unwrap()]);
    assert!(stdout(&o).contains("BF16"), "{}", stdout(&o));
    let o = phi3(&[
        "run",
        "-m",
        out.to_str().unwrap(),
        "--prompt-ids",
        "3,4",
        "-n",
        "5",
        "--greedy",
        "--print-ids",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = phi3(&[
        "quantize",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "q4_0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&phi3(&["inspect", out.to_str().unwrap()])).contains("Q4_0"));
    // the fixture's rows (128 weights) are not whole 256-weight K-quant
    // superblocks: a single K type is refused, a mix falls back as llama.cpp's does
    let o = phi3(&[
        "convert",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "q4_k",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a multiple of the block size 256"),
        "{}",
        stderr(&o)
    );
    let o = phi3(&[
        "quantize",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "q4_k_m",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = stdout(&phi3(&["inspect", out.to_str().unwrap()]));
    assert!(shown.contains("Q5_0") && shown.contains("Q8_0"), "{shown}");
    let o = phi3(&[
        "convert",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "q3_k_xl",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("expected one of f32, f16, bf16, q8_0"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn user_errors_are_clear_and_exit_non_zero() {
    let model = testdata().join("models/phi-3-mini-4k");
    let m = model.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["inspect", "/no/such/model.gguf"], "/no/such/model.gguf"),
        (vec!["run", "-m", m, "hello"], "has no tokenizer"),
        (
            vec!["run", "-m", m, "--prompt-ids", "1,999", "--greedy", "--print-ids"],
            "outside the vocabulary",
        ),
        (
            vec!["run", "-m", m, "--prompt-ids", "1,x", "--greedy", "--print-ids"],
            "invalid digit",
        ),
        (
            vec![
                "run",
                "-m",
                m,
                "--prompt-ids",
                "1",
                "--ctx",
                "100000",
                "--greedy",
                "--print-ids",
            ],
            "context length",
        ),
        (vec!["run", "-m", m, "--prompt-ids", "1", "--temp", "-1"], "temperature"),
        (vec!["run", "-m", m, "--prompt-ids", "1", "--top-p", "2"], "top_p"),
        (
            vec!["run", "-m", m, "--prompt-ids", "1", "--kv-type", "q4"],
            "--kv-type",
        ),
        (vec!["inspect", m, "--ctx", "0"], "--ctx"),
        (vec!["serve", "-m", m, "--batch-wait-ms", "20000"], "--batch-wait-ms"),
    ];
    for (args, needle) in cases {
        let o = phi3(&args);
        assert!(!o.status.success(), "{args:?} must fail");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
}

fn vocab_gguf() -> String {
    testdata()
        .join("../../shared/testdata/tokenizer/ggml-vocab-phi-3.gguf")
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn tokenize_and_detokenize() {
    let v = vocab_gguf();
    let hf = testdata().join("tokenizer/phi-3-hf");
    let text = "<|user|>\nHello world<|end|>";
    for model in [v.as_str(), hf.to_str().unwrap()] {
        let o = phi3(&["tokenize", "-m", model, text]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "1,32010,29871,13,10994,3186,32007");
        let o = phi3(&["tokenize", "-m", model, "--no-bos", "--no-parse-special", "<|end|>"]);
        assert_eq!(stdout(&o).trim(), "529,29989,355,29989,29958");
        let o = phi3(&["detokenize", "-m", model, "1,32010,29871,13,10994,3186,32007"]);
        assert_eq!(stdout(&o), "\nHello world\n");
        let o = phi3(&["detokenize", "-m", model, "--special", "32010,29871,13,10994"]);
        assert_eq!(stdout(&o), "<|user|> \nHello\n");
    }
    let o = phi3(&["tokenize", "-m", &v, "--pieces", "--no-bos", "Hi"]);
    assert_eq!(stdout(&o), "6324\t\"▁Hi\"\n");
}

#[test]
fn tokenizer_errors() {
    let v = vocab_gguf();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"ok\xff").unwrap();
    let o = phi3(&["tokenize", "-m", &v, "--file", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not valid UTF-8 at byte 2"), "{}", stderr(&o));
    let o = phi3(&["detokenize", "-m", &v, "5,40000"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("40000 is outside the vocabulary"), "{}", stderr(&o));
    // a model file without a vocabulary
    let m = testdata().join("models/phi-3.5-mini-gguf-py.gguf");
    let o = phi3(&["tokenize", "-m", m.to_str().unwrap(), "hi"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tokenizer.ggml.model"), "{}", stderr(&o));
}

/// A small random model carrying the real Phi-3 vocabulary and chat template.
fn model_with_vocab(dir: &std::path::Path) -> PathBuf {
    let base = phi3_model::Model::open(testdata().join("models/phi-3-mini-4k"))
        .unwrap()
        .config;
    phi3_eval::synth::random_chat_model(&base, std::path::Path::new(&vocab_gguf()), dir).unwrap()
}

#[test]
fn run_text_prompts_with_sampling_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_vocab(dir.path());
    let m = model.to_str().unwrap();
    let base = [
        "run",
        "-m",
        m,
        "Hello there",
        "-n",
        "24",
        "--seed",
        "9",
        "--temp",
        "0.9",
        "--ignore-eos",
    ];
    let a = phi3(&base);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = phi3(&base);
    assert_eq!(stdout(&a), stdout(&b), "same seed, same text");
    assert!(stderr(&a).contains("seed 9"), "{}", stderr(&a));
    let text = stdout(&a);
    let chars: Vec<char> = text.trim_end_matches('\n').chars().collect();
    assert!(chars.len() > 10, "{text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let cut = phi3(&[&base[..], &["--stop", &stop]].concat());
    assert!(cut.status.success(), "{}", stderr(&cut));
    assert_eq!(
        stdout(&cut).trim_end_matches('\n'),
        &text[..text.find(&stop).unwrap()],
        "cut before {stop:?}"
    );
    // a system message and the raw mode change the prompt
    let sys = phi3(&[&base[..], &["--system", "Be brief."]].concat());
    assert!(sys.status.success(), "{}", stderr(&sys));
    let raw = phi3(&[&base[..], &["--raw"]].concat());
    assert!(raw.status.success(), "{}", stderr(&raw));
    assert!(
        stderr(&raw).contains("prompt 3 tokens"),
        "BOS + 2 pieces: {}",
        stderr(&raw)
    );
}

fn chat_with_stdin(model: &str, input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_phi3"))
        .args(["chat", "-m", model, "-n", "6", "--seed", "1", "--system", "Be brief."])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn chat_reads_turns_and_commands() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_vocab(dir.path());
    let m = model.to_str().unwrap();
    let saved = dir.path().join("conv.json");
    let script = format!(
        "Hello\nTell me \\\nmore\n/save {0}\n/reset\n/load {0}\n/system\n/help\n/nope\nBye\n",
        saved.display()
    );
    let o = chat_with_stdin(m, &script);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let err = stderr(&o);
    for needle in [
        "(saved 4 messages to",
        "(conversation cleared)",
        "(loaded 4 messages from",
        "(system message removed)",
        "commands:",
        "(unknown command /nope",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // three replies; the second feeds only the new turn, not the whole conversation
    let fed: Vec<usize> = err
        .lines()
        .filter_map(|l| l.strip_prefix('[')?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(fed.len(), 3, "{err}");
    // the third turn follows /load, which starts a fresh cache: it feeds the whole
    // conversation, far more than the second turn needed
    assert!(
        fed[1] < fed[2],
        "second turn fed {} tokens, the reloaded one {}: {err}",
        fed[1],
        fed[2]
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(json["system"], "Be brief.");
    assert_eq!(
        json["messages"][2]["content"], "Tell me \nmore",
        "a continued line is one message"
    );
}

/// Runs `phi3 ARGS` in a pseudo-terminal (util-linux `script`), typing each
/// of `keys` after its delay, as a user would; `None` where script(1) is missing.
fn in_terminal(args: &str, keys: &[(u64, &[u8])]) -> Option<Output> {
    use std::io::{Read, Write};
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("script(1) not installed: skipping the pseudo-terminal test");
        return None;
    }
    // `exec`: the program replaces script's shell, so Ctrl-C reaches the program alone. A shell
    // left waiting in between (dash does not exec the last command) dies of the SIGINT itself,
    // and script reports that death as the program's exit status.
    let cmd = format!("exec {} {args}", env!("CARGO_BIN_EXE_phi3"));
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    for (wait_ms, k) in keys {
        std::thread::sleep(std::time::Duration::from_millis(*wait_ms));
        stdin.write_all(k).unwrap();
    }
    // Keep script's input open until the program has left by itself: at end of input script
    // hangs up the terminal, and a program still shutting down would die of the SIGHUP.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(stdin);
    let status = child.wait().unwrap();
    Some(Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    })
}

#[test]
fn chat_in_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_vocab(dir.path());
    // one line at a time: the line editor discards what is typed ahead; the last key is Ctrl-D
    let keys: [(u64, &[u8]); 3] = [(1500, b"Hi there\r"), (1500, b"/help\r"), (1500, b"\x04")];
    let Some(o) = in_terminal(&format!("chat -m {} -n 4 --seed 2", model.display()), &keys) else {
        return;
    };
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("> "), "the line editor's prompt: {out}");
    assert!(out.contains("commands:"), "{out}");
    assert!(out.contains("generated"), "a reply with its speed line: {out}");
}

#[test]
fn saved_sessions_skip_the_shared_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_vocab(dir.path());
    let m = model.to_str().unwrap();
    let saved = dir.path().join("doc.session");
    let doc = "Here is a long document about rivers, lakes and the sea. ".repeat(4);
    let q1 = format!("{doc}What is it about?");
    let q2 = format!("{doc}Summarize it.");
    let o = phi3(&[
        "run",
        "-m",
        m,
        &q1,
        "-n",
        "4",
        "--greedy",
        "--raw",
        "--save-session",
        saved.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fresh = phi3(&["run", "-m", m, &q2, "-n", "6", "--greedy", "--raw", "--kv-type", "f16"]);
    let reused = phi3(&[
        "run",
        "-m",
        m,
        &q2,
        "-n",
        "6",
        "--greedy",
        "--raw",
        "--load-session",
        saved.to_str().unwrap(),
    ]);
    assert!(reused.status.success(), "{}", stderr(&reused));
    let line = stderr(&reused);
    let n: usize = line
        .split("session: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no reuse reported: {line}"));
    assert!(n > 40, "the shared document is reused ({n} tokens): {line}");
    assert_eq!(
        stdout(&reused),
        stdout(&fresh),
        "the same answer as processing everything"
    );
    let o = phi3(&[
        "run",
        "-m",
        m,
        "hi",
        "--load-session",
        dir.path().join("missing").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
}

#[test]
fn memory_budgets_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_vocab(dir.path());
    let m = model.to_str().unwrap();
    let o = phi3(&["run", "-m", m, "Hello", "-n", "4", "--max-memory", "1M"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("more than --max-memory 1M"), "{}", stderr(&o));
    let o = phi3(&["run", "-m", m, "Hello", "-n", "4", "--max-memory", "lots"]);
    assert!(stderr(&o).contains("expected a size"), "{}", stderr(&o));
    // the budget limits the chat's context below the model's 512 tokens
    let size = std::fs::metadata(&model).unwrap().len();
    let budget = format!("{}", size + 1_100_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_phi3"))
        .args(["chat", "-m", m, "--max-memory", &budget, "-n", "2"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take();
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    let ctx: usize = err
        .split("context: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(ctx > 0 && ctx < 512, "{err}");
    let shown = stdout(&phi3(&["inspect", m, "--max-memory", &budget]));
    assert!(shown.contains(&format!("up to {ctx} tokens")), "{shown}");
}

#[test]
fn ctrl_c_stops_a_reply_without_leaving_the_chat() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_vocab(dir.path());
    // a reply that would run to the end of the context (a few seconds), Ctrl-C, /help, Ctrl-D
    let keys: [(u64, &[u8]); 4] = [
        (1500, b"Tell me everything\r"),
        (600, b"\x03"),
        (1500, b"/help\r"),
        (1000, b"\x04"),
    ];
    let args = format!("chat -m {} -n 100000 --ctx 512 --seed 4 --temp 1", model.display());
    let Some(o) = in_terminal(&args, &keys) else { return };
    let out = stdout(&o);
    assert!(o.status.success(), "Ctrl-C must not end the chat ({}): {out}", o.status);
    assert!(out.contains("commands:"), "the chat went on after Ctrl-C: {out}");
    // on a loaded machine the reply may end by itself before the key arrives
    assert!(out.contains("(stopped)") || out.contains("context full"), "{out}");
}
