//! Snapshot tests of the command line: every `--help` text and every user-facing error message
//! that needs no peer, as files under `tests/cmd/` (regenerate with `TRYCMD=overwrite`).

#[test]
fn cli_snapshots() {
    trycmd::TestCases::new()
        .register_bin("yakk", std::path::Path::new(env!("CARGO_BIN_EXE_yakk")))
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .case("tests/cmd/*.toml");
}
