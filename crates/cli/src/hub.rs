//! Models by reference: a local file or folder, or a Hugging Face repo and
//! file (`owner/repo/file.gguf` or `owner/repo:file.gguf`), downloaded with
//! hf-hub into the Hugging Face cache layout (`HF_HOME`, `HF_ENDPOINT`
//! honoured), resumed after a cut connection, and checked against the
//! file's SHA-256 (the hub's ETag for large files).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};

/// What phi3 runs when no `--model` is given.
pub const DEFAULT_MODEL: &str = "microsoft/Phi-3-mini-4k-instruct-gguf/Phi-3-mini-4k-instruct-q4.gguf";

/// A reference to a file in a hub repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    pub repo: String,
    pub file: String,
}

impl HubFile {
    /// Parses `owner/repo/file` (the file may have folders) or `owner/repo:file`.
    pub fn parse(s: &str) -> Option<HubFile> {
        if let Some((repo, file)) = s.split_once(':') {
            return (repo.matches('/').count() == 1 && !file.is_empty()).then(|| HubFile {
                repo: repo.to_string(),
                file: file.to_string(),
            });
        }
        let mut parts = s.splitn(3, '/');
        let (owner, name, file) = (parts.next()?, parts.next()?, parts.next()?);
        (!owner.is_empty() && !name.is_empty() && !file.is_empty()).then(|| HubFile {
            repo: format!("{owner}/{name}"),
            file: file.to_string(),
        })
    }
}

/// The local path for `--model`: the path itself if it exists, else a hub
/// reference fetched into (or found in) the cache.
pub fn resolve(model: Option<&Path>) -> Result<PathBuf> {
    let spec = match model {
        Some(p) if p.exists() => return Ok(p.to_path_buf()),
        Some(p) => p.to_string_lossy().to_string(),
        None => DEFAULT_MODEL.to_string(),
    };
    let Some(hub) = HubFile::parse(&spec) else {
        bail!("{spec}: no such file or folder (nor a hub reference like owner/repo/file.gguf)");
    };
    pull(&hub)
}

/// Downloads (or finds in the cache) `hub`, verifying it.
pub fn pull(hub: &HubFile) -> Result<PathBuf> {
    let cache = Cache::from_env();
    if let Some(path) = cache.repo(Repo::new(hub.repo.clone(), RepoType::Model)).get(&hub.file) {
        return Ok(path);
    }
    let api = ApiBuilder::from_env()
        .with_progress(std::io::stderr().is_terminal())
        .with_retries(0)
        .build()
        .map_err(|e| anyhow!("cannot set up downloads: {e}"))?;
    let path = api.model(hub.repo.clone()).download(&hub.file).map_err(|e| {
        anyhow!(
            "could not download {}/{} ({e}); it is not in the cache either ({}). When online, run \
             `phi3 pull {}/{}` (it resumes a cut download), or pass --model with a local file",
            hub.repo,
            hub.file,
            cache.path().display(),
            hub.repo,
            hub.file
        )
    })?;
    verify(&path)?;
    Ok(path)
}

/// Checks a downloaded blob against its name, which is its SHA-256 for the
/// large (LFS) files models are; a mismatch removes it from the cache.
fn verify(path: &Path) -> Result<()> {
    let blob = std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    let name = blob
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(()); // small files carry a git hash, not a SHA-256
    }
    let mut f = std::fs::File::open(&blob)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != name.to_ascii_lowercase() {
        let _ = std::fs::remove_file(&blob);
        let _ = std::fs::remove_file(path);
        bail!("{}: the download is corrupted (SHA-256 {got}, expected {name}); it was removed from the cache, run the command again", path.display());
    }
    Ok(())
}

/// Models in the cache: (repo, file, bytes).
pub fn list() -> Vec<(String, String, u64)> {
    let hub = Cache::from_env().path().clone();
    let mut out = Vec::new();
    let Ok(repos) = std::fs::read_dir(&hub) else { return out };
    for repo in repos.flatten() {
        let name = repo.file_name().to_string_lossy().to_string();
        let Some(id) = name.strip_prefix("models--") else {
            continue;
        };
        let id = id.replacen("--", "/", 1);
        let Ok(snaps) = std::fs::read_dir(repo.path().join("snapshots")) else {
            continue;
        };
        for snap in snaps.flatten() {
            let mut stack = vec![snap.path()];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if let Ok(meta) = std::fs::metadata(&p) {
                        let rel = p.strip_prefix(snap.path()).unwrap_or(&p).display().to_string();
                        out.push((id.clone(), rel, meta.len()));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// owner/repo/file.gguf (or owner/repo:file.gguf); default: the Phi-3-mini-4k-instruct q4 GGUF.
    model: Option<String>,
}

pub fn pull_main(args: PullArgs) -> Result<()> {
    let spec = args.model.unwrap_or_else(|| DEFAULT_MODEL.to_string());
    let hub = HubFile::parse(&spec).ok_or_else(|| anyhow!("{spec}: expected owner/repo/file or owner/repo:file"))?;
    let path = pull(&hub)?;
    crate::print_stdout(&format!("{}\n", path.display()))
}

pub fn list_main() -> Result<()> {
    let mut s = String::new();
    for (repo, file, bytes) in list() {
        s.push_str(&format!("{repo}/{file}\t{}\n", phi3_model::memory::human_bytes(bytes)));
    }
    if s.is_empty() {
        eprintln!("no models in the cache ({})", Cache::from_env().path().display());
    }
    crate::print_stdout(&s)
}
