//! One containerd per test host, with its own root, state, socket and CNI
//! directories, configured as these machines need (see
//! `kubernetes-facts.md`): `restrict_oom_score_adj` (root lacks
//! CAP_SYS_RESOURCE), cgroupfs (`SystemdCgroup = false`, cgroup v1 hosts)
//! and pod namespaces under the state dir (not /run/netns, where netlab's
//! live). Dropping it removes every sandbox through the CRI (so CNI DEL
//! runs), then stops containerd and removes its shims, mounts, shim
//! sockets under /run/containerd/s and libcni's cached results.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_cri::v1::{ListPodSandboxRequest, RemovePodSandboxRequest, StopPodSandboxRequest};
use sha2::{Digest, Sha256};
use weave_tests::{Host, Process, wait_for};

use crate::cri;
use crate::image::PAUSE_IMAGE;

/// Where libcni caches ADD results (shared by every runtime on the machine).
const CNI_RESULTS: &str = "/var/lib/cni/results";
/// Where containerd shims put their sockets, whatever the state dir.
const SHIM_SOCKETS: &str = "/run/containerd/s";
/// The CRI's containerd namespace.
const CRI_NAMESPACE: &str = "k8s.io";

/// The containerd configuration (version 2) for an instance under `dir`.
pub fn config_toml(dir: &Path, snapshotter: &str) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/net.d"
    max_conf_num = 1
"#
    )
}

/// A containerd running in a test host.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    netns: String,
    snapshotter: String,
    process: Option<Process>,
    log_index: u32,
}

impl Containerd {
    /// Writes the configuration under `dir` and starts containerd in
    /// `host`; waits until it answers.
    pub fn start(host: &Host, dir: &Path) -> Result<Containerd> {
        for sub in ["root", "state", "cni/bin", "cni/net.d", "opt", "logs"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let snapshotter = "overlayfs".to_owned();
        std::fs::write(dir.join("config.toml"), config_toml(dir, &snapshotter))?;
        let mut c = Containerd {
            dir: dir.to_path_buf(),
            netns: host.netns().to_owned(),
            snapshotter,
            process: None,
            log_index: 0,
        };
        c.spawn(host)?;
        Ok(c)
    }

    fn spawn(&mut self, host: &Host) -> Result<()> {
        let config = self.dir.join("config.toml");
        let name = format!("containerd{}", self.log_index);
        self.log_index += 1;
        // nsenter, not `ip netns exec`: the latter also makes a mount
        // namespace with a fresh /sys, which hides the cgroup mounts runc
        // needs ("no cgroup mount found in mountinfo").
        let log = self.dir.join(format!("{name}.log"));
        let process = weave_tests::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["containerd", "--config", &config.to_string_lossy()])
            .spawn(&log)?;
        let _ = host;
        self.process = Some(process);
        wait_for(Duration::from_secs(30), "containerd answers", || {
            Ok(self.ctr(&["version"]).is_ok())
        })
        .with_context(|| self.log_tail())?;
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = self.process.as_ref().map(Process::log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops containerd (pods keep running in their shims) and starts it
    /// again, as an upgrade or crash would.
    pub fn restart(&mut self, host: &Host) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(10))?;
        }
        self.spawn(host)
    }

    /// The gRPC socket (CRI and containerd API).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The CNI configuration directory containerd reads.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }

    /// The CNI plugin directory containerd runs plugins from.
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir.join("cni/bin")
    }

    /// The directory of this instance.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pid of the containerd process.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Runs `ctr` against this instance in the CRI's namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let socket = self.socket();
        let out = weave_tests::Command::new("ctr")
            .args(["--address", &socket.to_string_lossy(), "-n", CRI_NAMESPACE])
            .args(args.iter().copied())
            .run()?;
        Ok(out.stdout)
    }

    /// Imports an image archive for the CRI.
    pub fn import(&self, archive: &Path) -> Result<()> {
        self.ctr(&[
            "images",
            "import",
            "--snapshotter",
            &self.snapshotter,
            &archive.to_string_lossy(),
        ])?;
        Ok(())
    }

    /// Stops and removes every pod sandbox through the CRI, which runs the
    /// CNI DEL of each.
    pub fn remove_all_sandboxes(&self) -> Result<Vec<String>> {
        let socket = self.socket();
        run_async(async move {
            let mut rt = cri::connect(&socket).await?;
            let list = rt
                .list_pod_sandbox(ListPodSandboxRequest { filter: None })
                .await?
                .into_inner();
            let mut ids = Vec::new();
            for s in list.items {
                rt.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await?;
                rt.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await?;
                ids.push(s.id);
            }
            Ok(ids)
        })
    }

    /// Sandbox ids containerd has state for (task directories).
    fn known_ids(&self) -> Vec<String> {
        let tasks = self
            .dir
            .join("state/io.containerd.runtime.v2.task")
            .join(CRI_NAMESPACE);
        std::fs::read_dir(tasks)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn teardown(&mut self) {
        let mut ids = self.known_ids();
        if self.process.is_some() {
            match self.remove_all_sandboxes() {
                Ok(removed) => ids.extend(removed),
                Err(e) => eprintln!(
                    "testbed: removing sandboxes of {}: {e:#}",
                    self.dir.display()
                ),
            }
        }
        if let Some(mut p) = self.process.take() {
            let _ = p.stop(Duration::from_secs(10));
        }
        let address = self.socket().to_string_lossy().into_owned();
        kill_shims(&address);
        unmount_under(&self.dir);
        ids.sort();
        ids.dedup();
        for id in &ids {
            let hash: String = Sha256::digest(format!("{address}/{CRI_NAMESPACE}/{id}").as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let _ = std::fs::remove_file(Path::new(SHIM_SOCKETS).join(hash));
            if let Ok(entries) = std::fs::read_dir(CNI_RESULTS) {
                for e in entries.filter_map(|e| e.ok()) {
                    if e.file_name().to_string_lossy().contains(id.as_str()) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        // Results of ADDs whose sandbox never got a task (a failed
        // RunPodSandbox) name our state dir as the interface's sandbox.
        let state = self.dir.join("state").to_string_lossy().into_owned();
        if let Ok(entries) = std::fs::read_dir(CNI_RESULTS) {
            for e in entries.filter_map(|e| e.ok()) {
                let ours = std::fs::read_to_string(e.path()).is_ok_and(|text| {
                    text.contains(&state) || text.contains(&state.replace('/', "\\/"))
                });
                if ours {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(self.dir.join("root"));
        let _ = std::fs::remove_dir_all(self.dir.join("state"));
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Runs `f` to completion on a runtime of its own, on a thread of its own
/// (callers may be inside another runtime, or in a destructor).
pub fn run_async<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?
            .block_on(f)
    })
    .join()
    .unwrap_or_else(|_| bail!("the CRI thread panicked"))
}

/// Kills shims started for the containerd at `address`.
fn kill_shims(address: &str) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args.first().is_some_and(|a| a.contains("containerd-shim"));
        if is_shim && args.iter().any(|a| a == address) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Lazily unmounts everything mounted under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}
