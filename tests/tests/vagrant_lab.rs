//! The Vagrant lab's files are valid: `vagrant validate` accepts the
//! Vagrantfile (for the default three machines and for five), and the
//! provisioning script parses. Booting it needs a VM provider, which these
//! machines lack; the README in `vagrant/` says how to run it.

use std::path::PathBuf;
use std::process::Command;

fn vagrant_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join("vagrant"))
        .unwrap_or_default()
}

fn validate(nodes: &str) -> (bool, String) {
    let out = Command::new("vagrant")
        .arg("validate")
        .env("WEAVE_NODES", nodes)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .current_dir(vagrant_dir())
        .output()
        .expect("vagrant is not installed: run `cargo xtask setup` (Debian package vagrant)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn vagrant_validate_accepts_the_lab() {
    for nodes in ["3", "5"] {
        let (ok, text) = validate(nodes);
        assert!(ok, "vagrant validate with {nodes} nodes failed:\n{text}");
        assert!(text.contains("validated successfully"), "{text}");
    }
}

#[test]
fn provisioning_script_parses() {
    let out = Command::new("sh")
        .arg("-n")
        .arg(vagrant_dir().join("provision.sh"))
        .output()
        .expect("running sh");
    assert!(
        out.status.success(),
        "provision.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
