//! `weave-router install-cni` copies the plugins and writes the network
//! configuration list, and says what is missing when it cannot.

use std::path::PathBuf;
use std::process::Command;

const ROUTER: &str = env!("CARGO_BIN_EXE_weave-router");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weave-install-cni-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

#[test]
fn install_cni_writes_plugins_and_conflist() {
    let root = scratch("ok");
    let from = root.join("build");
    std::fs::create_dir_all(&from).unwrap();
    for plugin in ["weave-net", "weave-ipam"] {
        std::fs::write(from.join(plugin), format!("#!/bin/sh\necho {plugin}\n")).unwrap();
    }
    let (bin, conf) = (root.join("opt/cni/bin"), root.join("etc/cni/net.d"));
    let out = Command::new(ROUTER)
        .arg("install-cni")
        .arg("--from")
        .arg(&from)
        .arg("--plugin-dir")
        .arg(&bin)
        .arg("--conf-dir")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for plugin in ["weave-net", "weave-ipam"] {
        let text = std::fs::read_to_string(bin.join(plugin)).unwrap();
        assert!(text.contains(plugin));
    }
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(conf.join("10-weave.conflist")).unwrap()).unwrap();
    assert_eq!(list["plugins"][0]["type"], "weave-net");
    assert_eq!(list["plugins"][1]["type"], "portmap");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn install_cni_without_plugins_fails_clearly() {
    let root = scratch("missing");
    let out = Command::new(ROUTER)
        .arg("install-cni")
        .arg("--from")
        .arg(root.join("nowhere"))
        .arg("--plugin-dir")
        .arg(root.join("bin"))
        .arg("--conf-dir")
        .arg(root.join("conf"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("weave-net"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&root).unwrap();
}
