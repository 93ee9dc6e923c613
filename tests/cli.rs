//! The `pgsluice` binary's commands: --help, --version, check-config (good and broken files) and
//! scram-secret.

use std::io::Write;
use std::process::{Command, Stdio};

fn pgsluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgsluice"))
}

#[test]
fn help_and_version() {
    let out = pgsluice().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["check-config", "scram-secret", "demo", "Examples"] {
        assert!(help.contains(word), "help mentions {word}: {help}");
    }
    let out = pgsluice().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");
    let out = pgsluice()
        .args(["check-config", example])
        .env("APP_PASSWORD", "secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn check_config_reports_every_error_with_its_key() {
    let dir = std::env::temp_dir().join(format!("pgsluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "pool: { size: 2, min_size: 5 }\ndatabases:\n  - name: db\n    nodes: [{ host: h, port: 0 }]\n",
    )
    .unwrap();
    let out = pgsluice()
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pool.min_size"), "{stderr}");
    assert!(stderr.contains("databases[0].nodes[0].port"), "{stderr}");

    let unknown = dir.join("unknown.yaml");
    std::fs::write(&unknown, "pool: { sise: 2 }\n").unwrap();
    let out = pgsluice()
        .args(["check-config"])
        .arg(&unknown)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sise"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn scram_secret_prints_a_verifier_that_parses() {
    let mut child = pgsluice()
        .arg("scram-secret")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hunter2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let verifier = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    let parsed = pgsluice::auth::scram::ScramVerifier::parse(&verifier).unwrap();
    let again = pgsluice::auth::scram::ScramVerifier::from_password("hunter2", &parsed.salt, 4096);
    assert!(parsed == again, "verifier matches the password");
}
