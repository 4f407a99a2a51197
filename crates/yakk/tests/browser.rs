//! The browser peer in a real Chromium: runs `npm run test:browser` in `web/` (Playwright tests
//! driving Debian's `/usr/bin/chromium`, web/test/browser/) against this build's `yakk`, which
//! must embed the web app (`cd web && npm ci && npm run build` before `cargo build`).
//!
//! Developers without Node or Chromium get a skip with the reason; with `YAKK_BROWSER_TESTS=1`
//! or `YAKK_CI` (both set by `.ci/run`) anything missing is a failure.

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_yakk");

fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

fn required() -> bool {
    std::env::var("YAKK_BROWSER_TESTS").is_ok_and(|v| v == "1")
        || std::env::var_os("YAKK_CI").is_some()
}

/// What is missing to run the browser tests, if anything.
fn missing() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if !web_dir().join("node_modules/playwright-core").is_dir() {
        return Some("web/node_modules is missing (cd web && npm ci)".into());
    }
    if Command::new("npm").arg("--version").output().is_err() {
        return Some("npm is not installed".into());
    }
    if !yakk_signal::app_built() {
        return Some(
            "this yakk was built without the web app (cd web && npm run build, then cargo build)"
                .into(),
        );
    }
    None
}

#[test]
fn browser_peer_in_chromium() {
    if let Some(why) = missing() {
        assert!(!required(), "YAKK_BROWSER_TESTS=1 but {why}");
        eprintln!(
            "SKIPPED: the browser tests need {why}; set YAKK_BROWSER_TESTS=1 to require them"
        );
        return;
    }
    let status = Command::new("npm")
        .args(["run", "--silent", "test:browser"])
        .current_dir(web_dir())
        .env("YAKK_BIN", BIN)
        .status()
        .expect("run npm");
    assert!(status.success(), "the browser tests failed: {status}");
}
