//! The Vagrant lab's files are valid: `vagrant validate` accepts the
//! Vagrantfile (for the default three machines and for five), and the
//! provisioning script parses. Booting it needs a VM provider, which these
//! machines lack; the README in `vagrant/` says how to run it.
//!
//! Validation runs with `--ignore-provider`: without it Vagrant first looks
//! for a usable provider and, on a machine with none (Debian's vagrant
//! package brings none), stops before reading the file. With it Vagrant
//! still loads and evaluates the whole Vagrantfile and validates every
//! machine's box, network, synced folder, hostname and provisioner settings
//! (including that the provisioning script exists); only the
//! `config.vm.provider` blocks (memory and CPUs) go unchecked.
//! `vagrant_validate_rejects_a_broken_lab` proves the check still bites.

use std::path::PathBuf;
use std::process::Command;

fn vagrant_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join("vagrant"))
        .unwrap_or_default()
}

fn validate(nodes: &str) -> (bool, String) {
    validate_in(&vagrant_dir(), nodes)
}

fn validate_in(dir: &std::path::Path, nodes: &str) -> (bool, String) {
    let out = Command::new("vagrant")
        .args(["validate", "--ignore-provider"])
        .env("WEAVE_NODES", nodes)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .current_dir(dir)
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
fn vagrant_validate_rejects_a_broken_lab() {
    // A copy of the lab whose provisioner points at a script that is not
    // there, and one with an unknown setting: both must fail validation.
    let scratch = std::env::temp_dir().join(format!("weave-vagrant-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("creating a scratch directory");
    let original = std::fs::read_to_string(vagrant_dir().join("Vagrantfile"))
        .expect("reading the Vagrantfile");
    let cases = [
        (
            "a missing provisioning script",
            original.replace("path: \"provision.sh\"", "path: \"no-such-script.sh\""),
        ),
        (
            "an unknown machine setting",
            original.replace(
                "node.vm.hostname = name",
                "node.vm.hostname = name\n      node.vm.no_such_setting = 1",
            ),
        ),
    ];
    for (what, text) in cases {
        assert_ne!(
            text, original,
            "the Vagrantfile no longer has the line this test edits"
        );
        std::fs::write(scratch.join("Vagrantfile"), text).expect("writing the broken Vagrantfile");
        std::fs::copy(
            vagrant_dir().join("provision.sh"),
            scratch.join("provision.sh"),
        )
        .expect("copying provision.sh");
        let (ok, text) = validate_in(&scratch, "3");
        assert!(!ok, "vagrant validate accepted {what}:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&scratch);
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
