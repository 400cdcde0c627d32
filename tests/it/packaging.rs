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

/// `systemd/make-deb` builds a package holding the binary, the unit, sysusers/tmpfiles entries and
/// the config as a conffile; it installs into a throw-away root (`dpkg --root`, maintainer scripts
/// honouring `DPKG_ROOT`), and purge removes the state directory.
#[test]
fn the_debian_package_installs_and_purges() {
    let out = tempfile::tempdir().unwrap();
    let built = Command::new(repo("systemd/make-deb"))
        .arg(out.path())
        .env("TORII_BIN", env!("CARGO_BIN_EXE_torii"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run systemd/make-deb: {e}"));
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let deb = PathBuf::from(String::from_utf8(built.stdout).unwrap().trim());
    let list = Command::new("dpkg-deb").arg("-c").arg(&deb).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for path in [
        "./usr/bin/torii",
        "./usr/lib/systemd/system/torii.service",
        "./usr/lib/sysusers.d/torii.conf",
        "./usr/lib/tmpfiles.d/torii.conf",
        "./etc/torii/torii.toml",
    ] {
        assert!(list.contains(path), "{path} missing from the package:\n{list}");
    }
    assert!(list.contains("root/root"), "files owned by root:\n{list}");
    let conffiles = Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Package").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&conffiles.stdout).trim(), "torii");
    let ctrl = tempfile::tempdir().unwrap();
    assert!(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(ctrl.path()).status().unwrap().success());
    assert_eq!(std::fs::read_to_string(ctrl.path().join("conffiles")).unwrap().trim(), "/etc/torii/torii.toml");
    let postinst = std::fs::read_to_string(ctrl.path().join("postinst")).unwrap();
    let enables = postinst
        .lines()
        .any(|l| l.trim_start().starts_with("systemctl enable") || l.contains("deb-systemd-helper enable"));
    assert!(!enables, "installing enables nothing:\n{postinst}");

    // lintian (Debian's package checker; .ci/test installs it) finds nothing.
    let lintian = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .unwrap_or_else(|e| panic!("lintian is needed (apt-get install lintian; .ci/test installs it): {e}"));
    let report = String::from_utf8_lossy(&lintian.stdout);
    assert!(!report.lines().any(|l| l.starts_with("E:") || l.starts_with("W:")), "lintian:\n{report}");

    // Install and purge in a throw-away root.
    let root = tempfile::tempdir().unwrap();
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    std::fs::write(root.path().join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = |args: &[&str]| {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", root.path().display()))
            .args(["--force-not-root", "--force-depends", "--force-script-chrootless", "--force-unsafe-io"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "dpkg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(root.path().join("usr/bin/torii").is_file());
    assert!(root.path().join("etc/torii/torii.toml").is_file());
    std::fs::create_dir_all(root.path().join("var/lib/torii")).unwrap();
    std::fs::write(root.path().join("var/lib/torii/torii.redb"), b"state").unwrap();
    dpkg(&["--remove", "torii"]);
    assert!(root.path().join("var/lib/torii/torii.redb").exists(), "remove keeps the state");
    dpkg(&["--purge", "torii"]);
    assert!(!root.path().join("var/lib/torii").exists(), "purge removes the state");
    assert!(!root.path().join("usr/bin/torii").exists());
}
