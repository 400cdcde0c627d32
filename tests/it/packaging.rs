//! The systemd unit verifies, and the example config is valid.

use std::path::PathBuf;
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo("systemd/torii.service")).unwrap();
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "CapabilityBoundingSet=\n",
        "Restart=on-failure",
        "StateDirectory=torii",
        "User=torii",
    ] {
        assert!(unit.contains(hardening), "missing {hardening:?}");
    }
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torii.service");
    std::fs::write(&path, unit.replace("/usr/bin/torii", env!("CARGO_BIN_EXE_torii"))).unwrap();
    let out =
        Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap_or_else(|e| {
            panic!("systemd-analyze is needed (apt-get install systemd; .ci/test installs it): {e}")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("torii.service:"), "warnings about the unit: {stderr}");
}

#[test]
fn example_config_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_torii"))
        .args(["--config", repo("systemd/torii.toml").to_str().unwrap(), "check-config"])
        .env_remove("TORII_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
