//! Helpers shared by the VM tests (they need the kernel openvswitch datapath
//! and root, so they only run inside `cargo xtask vm`).
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use odp::handle::{DatapathOptions, Ovs};
use odp::transport::{Error, UpcallSocket};
use odp::wire::datapath::DatapathInfo;

/// A name unique to this process and tag, at most 15 bytes (IFNAMSIZ - 1).
pub fn unique(tag: &str) -> String {
    let n = format!("o{}{}", tag, std::process::id() % 100_000);
    n.chars().take(15).collect()
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a command and ignores its result (cleanup).
pub fn sh_quiet(cmd: &str, args: &[&str]) {
    let _ = Command::new(cmd).args(args).output();
}

/// A datapath that is deleted when dropped.
pub struct TestDp {
    pub info: DatapathInfo,
}

impl TestDp {
    pub fn create(ovs: &mut Ovs, tag: &str, opts: &DatapathOptions) -> TestDp {
        let name = unique(tag);
        // A leftover from an earlier failed run of this process id.
        let _ = ovs.datapaths().delete(&name);
        let info = ovs
            .datapaths()
            .create(&name, opts)
            .expect("create datapath");
        TestDp { info }
    }
    pub fn name(&self) -> &str {
        &self.info.name
    }
    pub fn ifindex(&self) -> i32 {
        self.info.dp_ifindex
    }
}

impl Drop for TestDp {
    fn drop(&mut self) {
        if let Ok(mut ovs) = Ovs::connect() {
            let _ = ovs.datapaths().delete(&self.info.name);
        }
    }
}

/// A veth pair deleted when dropped.
pub struct Veth {
    pub a: String,
    pub b: String,
}

impl Veth {
    pub fn new(tag: &str) -> Veth {
        let a = unique(&format!("{tag}a"));
        let b = unique(&format!("{tag}b"));
        sh_quiet("ip", &["link", "del", &a]);
        sh(
            "ip",
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        );
        sh("ip", &["link", "set", &a, "up"]);
        sh("ip", &["link", "set", &b, "up"]);
        Veth { a, b }
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        sh_quiet("ip", &["link", "del", &self.a]);
    }
}

/// Polls a non-blocking socket until `f` returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    sock: &mut UpcallSocket,
    timeout: Duration,
    mut f: impl FnMut(&mut UpcallSocket) -> Result<Option<T>, Error>,
) -> Option<T> {
    sock.set_nonblocking(true).unwrap();
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        match f(sock) {
            Ok(Some(t)) => return Some(t),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("receive failed: {e}"),
        }
    }
    None
}
