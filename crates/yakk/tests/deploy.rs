//! The deployment files agree with the workspace: no locked dependency declares a newer Rust than
//! the workspace's `rust-version` (those that declare none were tried with older toolchains: see
//! Cargo.toml), the README and the image build name that same version, and the image's build
//! context leaves out what would break it, and the compose file and the systemd unit pass `yakk
//! signal` only options it has. deploy/try-image.sh builds and runs the image.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// "1.89" or "1.89.0" as (1, 89, 0).
fn version(v: &str) -> (u32, u32, u32) {
    let mut parts = v.split('.').map(|p| {
        p.parse::<u32>()
            .unwrap_or_else(|_| panic!("not a version: {v}"))
    });
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

/// The workspace's `rust-version` (Cargo.toml).
fn declared() -> String {
    let toml = read("Cargo.toml");
    toml.lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim().trim_matches('"').to_string())
        .expect("rust-version in the workspace's Cargo.toml")
}

/// Every package the `yakk` binary builds from (normal and build dependencies, not dev ones),
/// with the Rust version each declares, from `cargo metadata` on the lock file.
fn build_graph() -> BTreeMap<String, Option<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages: BTreeMap<&str, &serde_json::Value> = m["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = m["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("id"), n))
        .collect();
    let start = packages
        .iter()
        .find(|(_, p)| p["name"] == "yakk")
        .map(|(id, _)| *id)
        .expect("the yakk package");
    let mut seen = BTreeSet::from([start]);
    let mut todo = vec![start];
    while let Some(id) = todo.pop() {
        for dep in nodes[id]["deps"].as_array().expect("deps") {
            let built = dep["dep_kinds"]
                .as_array()
                .expect("dep_kinds")
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            let dep_id = dep["pkg"].as_str().expect("pkg");
            if built && seen.insert(dep_id) {
                todo.push(dep_id);
            }
        }
    }
    seen.iter()
        .map(|id| {
            let p = packages[id];
            (
                format!(
                    "{} {}",
                    p["name"].as_str().expect("name"),
                    p["version"].as_str().expect("version")
                ),
                p["rust_version"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn no_locked_dependency_declares_a_newer_rust_than_the_workspace() {
    let declared = declared();
    let graph = build_graph();
    assert!(graph.len() > 50, "too few packages found: {graph:?}");
    let newer: Vec<String> = graph
        .iter()
        .filter_map(|(p, v)| {
            let v = v.as_deref()?;
            (version(v) > version(&declared)).then(|| format!("{p} needs {v}"))
        })
        .collect();
    assert!(
        newer.is_empty(),
        "Cargo.toml says rust-version {declared}, but the lock file holds packages that need more \
         (cargo refuses to build them with {declared}): {newer:?}"
    );
}

#[test]
fn the_readme_and_the_image_name_the_declared_rust_version() {
    let declared = declared();
    let readme = read("README.md");
    assert!(
        readme.contains(&format!("You need Rust {declared} or newer")),
        "the README's first steps should say Rust {declared}"
    );
    let dockerfile = read("deploy/Dockerfile");
    assert!(
        dockerfile.contains(&format!("ARG RUST_IMAGE=rust:{declared}-")),
        "deploy/Dockerfile should build with rust:{declared}"
    );
}

#[test]
fn the_image_builds_the_page_and_its_context_leaves_out_host_builds() {
    let dockerfile = read("deploy/Dockerfile");
    // The page is built in the image and embedded (`/` would otherwise say how to build it).
    assert!(
        dockerfile.contains("npm ci"),
        "the image builds the web app"
    );
    assert!(dockerfile.contains("COPY --from=web /src/web/dist web/dist"));
    let ignore = read(".dockerignore");
    let ignored: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    // The host's node_modules would replace the ones installed in the image (esbuild's binary
    // is the host's), target/ is gigabytes, and deploy/ holds the operator's certificates and
    // .env, which must stay out of the image.
    for path in ["target", ".git", "web/node_modules", "web/dist", "deploy"] {
        assert!(
            ignored.contains(path),
            ".dockerignore should leave out {path}"
        );
    }
}

/// Every `--flag` that deploy/compose.yaml and deploy/yakk-signal.service pass to `yakk
/// signal`, as options of the binary built here.
#[test]
fn the_deployment_files_pass_only_options_yakk_signal_has() {
    let help = Command::new(env!("CARGO_BIN_EXE_yakk"))
        .args(["signal", "--help"])
        .output()
        .expect("run yakk signal --help");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let compose = read("deploy/compose.yaml");
    // The `signal` service's command list, up to the next service.
    let signal = compose
        .split("\n  signal:\n")
        .nth(1)
        .and_then(|s| s.split("\n  turn:\n").next())
        .expect("the signal service in compose.yaml");
    let unit = read("deploy/yakk-signal.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart in the unit");
    // The command list's items (`- --listen=…`), and the unit's words.
    let items = signal
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- "));
    let mut flags = BTreeSet::new();
    for word in items.chain(exec.split_whitespace()) {
        let name = word.split('=').next().unwrap_or_default();
        if let Some(flag) = name.strip_prefix("--").filter(|f| !f.is_empty()) {
            flags.insert(flag.to_string());
        }
    }
    assert!(flags.len() >= 8, "too few options found: {flags:?}");
    let unknown: Vec<&String> = flags
        .iter()
        .filter(|f| !help.contains(&format!("--{f} ")) && !help.contains(&format!("--{f}\n")))
        .collect();
    assert!(unknown.is_empty(), "yakk signal has no option {unknown:?}");
}
