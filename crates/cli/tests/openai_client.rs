//! `phi3 serve` with the official OpenAI Python client as a real client
//! (tools/server/openai_client_check.py). The client comes from
//! PHI3_OPENAI_PYTHON (a Python with `openai` installed, as .ci/run sets
//! up), or else `python3` if it has `openai`; without one the test says so
//! and skips, unless PHI3_OPENAI_PYTHON is set.

mod serve_common;

use std::process::Command;

use serve_common::Server;

#[test]
fn the_openai_python_client_works_against_phi3_serve() {
    let required = std::env::var("PHI3_OPENAI_PYTHON").ok();
    let python = required.clone().unwrap_or_else(|| "python3".into());
    let has_client = Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_client {
        assert!(required.is_none(), "PHI3_OPENAI_PYTHON={python} cannot import openai");
        eprintln!("no Python with the openai package: skipping (see tools/server/requirements.txt)");
        return;
    }
    let s = Server::start(&["--parallel", "4", "--api-key", "test-key"]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/server/openai_client_check.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([&s.base, "test-key"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
