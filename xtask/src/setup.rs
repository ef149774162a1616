//! Installing what the tests need, idempotently, with downloads cached
//! under `target/cache`.
//!
//! Debian packages come from apt (lists refreshed once, only when something
//! is missing), virtme-ng from PyPI, and the VM's kernel from Debian's
//! `linux-image-amd64` dependency, extracted under `target/vm/kernel`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::shell;

/// Debian packages the host-namespace tests use.
const HOST_PACKAGES: &[&str] = &[
    "iproute2",
    "curl",
    "iputils-ping",
    "iptables",
    "nftables",
    "ipset",
    "tcpdump",
    "iperf3",
    "procps",
    "containernetworking-plugins",
];

/// Debian packages the Kubernetes test bed uses (k8s/): the container
/// runtime that makes pods through the CRI, the protobuf compiler the CRI
/// client is generated with, and busybox-static for the test images.
const KUBE_PACKAGES: &[&str] = &["containerd", "runc", "protobuf-compiler", "busybox-static"];

/// Debian's kubectl (1.20), installed only when no kubectl is on PATH: a
/// machine may already have a newer one from another package, whose
/// `/usr/bin/kubectl` this one would collide with.
const KUBECTL_PACKAGE: &str = "kubernetes-client";

/// Debian packages only the file checks use (`vagrant validate`).
const CHECK_PACKAGES: &[&str] = &["vagrant"];

/// Debian packages the VM and the tests inside it use.
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "openvswitch-switch",
];

/// The virtme-ng release the harness is written against.
const VIRTME_NG: &str = "virtme-ng==1.42";

/// A kernel ready to boot: its image and its module version.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Path of the `vmlinuz` image.
    pub image: PathBuf,
    /// The release string, e.g. `6.1.0-56-amd64`.
    pub release: String,
}

/// Everything the VM needs to boot.
#[derive(Debug, Clone)]
pub struct VmTools {
    /// The `vng` launcher.
    pub vng: PathBuf,
    /// The kernel to boot.
    pub kernel: Kernel,
}

/// Installs everything: host test tools and the VM.
pub fn all() -> Result<VmTools> {
    let mut apt = Apt::default();
    apt.ensure(HOST_PACKAGES)?;
    apt.ensure(CHECK_PACKAGES)?;
    kube_with(&mut apt)?;
    vm_with(&mut apt)
}

/// Installs the Debian packages the host-namespace tests and the sleeve
/// lab use (not the VM).
pub fn host() -> Result<()> {
    Apt::default().ensure(HOST_PACKAGES)
}

/// Installs what the Kubernetes test bed needs (containerd, runc,
/// protoc, busybox-static, and kubectl if there is none).
pub fn kube() -> Result<()> {
    kube_with(&mut Apt::default())
}

fn kube_with(apt: &mut Apt) -> Result<()> {
    apt.ensure(KUBE_PACKAGES)?;
    if shell::which("kubectl").is_none() {
        apt.ensure(&[KUBECTL_PACKAGE])?;
    }
    Ok(())
}

/// Installs what the VM needs and returns how to boot it.
pub fn vm() -> Result<VmTools> {
    vm_with(&mut Apt::default())
}

fn vm_with(apt: &mut Apt) -> Result<VmTools> {
    apt.ensure(VM_PACKAGES)?;
    let vng = ensure_vng()?;
    let kernel = ensure_kernel(apt)?;
    Ok(VmTools { vng, kernel })
}

/// apt-get, with its lists refreshed at most once per run.
#[derive(Debug, Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn update(&mut self) -> Result<()> {
        if !self.updated {
            require_root("apt-get update")?;
            eprintln!("xtask: apt-get update");
            shell::output("apt-get", &["update", "-q"]).context("apt-get update")?;
            self.updated = true;
        }
        Ok(())
    }

    fn ensure(&mut self, packages: &[&str]) -> Result<()> {
        let missing: Vec<&str> = packages
            .iter()
            .copied()
            .filter(|package| !installed(package))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        require_root(&format!("installing {}", missing.join(" ")))?;
        self.update()?;
        let archives = cache_dir("apt")?;
        std::fs::create_dir_all(archives.join("partial"))?;
        let archives_opt = format!("Dir::Cache::archives={}", archives.display());
        eprintln!("xtask: apt-get install {}", missing.join(" "));
        let mut args = vec![
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-o",
            &archives_opt,
            "-o",
            "APT::Sandbox::User=root",
        ];
        args.extend(&missing);
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("starting apt-get")?;
        if !status.success() {
            bail!("apt-get install {} failed ({status})", missing.join(" "));
        }
        Ok(())
    }

    /// The package `linux-image-amd64` depends on, e.g. `linux-image-6.1.0-56-amd64`.
    fn kernel_package(&mut self) -> Result<String> {
        for attempt in 0..2 {
            let depends =
                shell::output("apt-cache", &["depends", "linux-image-amd64"]).unwrap_or_default();
            let found = depends.lines().find_map(|line| {
                line.trim()
                    .strip_prefix("Depends: ")
                    .filter(|name| name.starts_with("linux-image-"))
                    .map(str::to_string)
            });
            match found {
                Some(name) => return Ok(name),
                None if attempt == 0 => self.update()?,
                None => {}
            }
        }
        bail!("apt-cache knows no dependency of linux-image-amd64: is this Debian?")
    }
}

fn require_root(what: &str) -> Result<()> {
    if !shell::is_root() {
        bail!("{what} needs root: run cargo xtask as root (see README.md)");
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    shell::output("dpkg-query", &["-W", "-f=${Status}", package])
        .map(|status| status.contains("install ok installed"))
        .unwrap_or(false)
}

/// `target/cache/<what>`, created.
fn cache_dir(what: &str) -> Result<PathBuf> {
    let dir = crate::target_dir().join("cache").join(what);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Finds `vng`, installing virtme-ng with pip if needed.
fn ensure_vng() -> Result<PathBuf> {
    let scripts = shell::output(
        "python3",
        &[
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ],
    )
    .map(|dir| PathBuf::from(dir.trim()).join("vng"))
    .ok();
    let find = || shell::which("vng").or_else(|| scripts.clone().filter(|path| path.is_file()));
    if let Some(vng) = find() {
        return Ok(vng);
    }
    let pip_cache = cache_dir("pip")?;
    eprintln!("xtask: pip install {VIRTME_NG}");
    shell::run(
        "python3",
        &[
            "-m",
            "pip",
            "install",
            "-q",
            "--root-user-action=ignore",
            "--cache-dir",
            &pip_cache.to_string_lossy(),
            VIRTME_NG,
        ],
    )?;
    find().context(
        "virtme-ng installed, but its `vng` command is not in PATH or python's scripts dir",
    )
}

/// Downloads and unpacks Debian's kernel under `target/vm/kernel`, runs
/// depmod there, and makes its modules visible under `/lib/modules`, where
/// virtme-ng looks for them.
fn ensure_kernel(apt: &mut Apt) -> Result<Kernel> {
    let unpacked = crate::target_dir().join("vm").join("kernel");
    if let Some(kernel) = unpacked_kernel(&unpacked)?.filter(|kernel| {
        modules_dir(&unpacked, &kernel.release)
            .join("modules.dep")
            .is_file()
    }) {
        install_modules(&unpacked, &kernel.release)?;
        return Ok(kernel);
    }
    let debs = cache_dir("kernel")?;
    let deb = match find_deb(&debs)? {
        Some(deb) => deb,
        None => {
            let package = apt.kernel_package()?;
            eprintln!("xtask: apt-get download {package}");
            let status = Command::new("apt-get")
                .args(["download", "-q", "-o", "APT::Sandbox::User=root", &package])
                .current_dir(&debs)
                .status()
                .context("starting apt-get download")?;
            if !status.success() {
                bail!("apt-get download {package} failed ({status})");
            }
            find_deb(&debs)?.context("apt-get download left no .deb behind")?
        }
    };
    let partial = unpacked.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    shell::run(
        "dpkg",
        &["-x", &deb.to_string_lossy(), &partial.to_string_lossy()],
    )?;
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::rename(&partial, &unpacked)?;
    let kernel = unpacked_kernel(&unpacked)?
        .with_context(|| format!("{} holds no boot/vmlinuz-*", deb.display()))?;
    shell::run(
        "depmod",
        &["-b", &unpacked.to_string_lossy(), &kernel.release],
    )?;
    install_modules(&unpacked, &kernel.release)?;
    Ok(kernel)
}

fn find_deb(dir: &Path) -> Result<Option<PathBuf>> {
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("linux-image-") && name.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    Ok(debs.pop())
}

/// `lib/modules/<release>` under `root`.
fn modules_dir(root: &Path, release: &str) -> PathBuf {
    root.join("lib/modules").join(release)
}

/// The kernel unpacked under `root`, if its image and modules are there.
fn unpacked_kernel(root: &Path) -> Result<Option<Kernel>> {
    let Ok(entries) = std::fs::read_dir(root.join("boot")) else {
        return Ok(None);
    };
    for entry in entries {
        let path = entry?.path();
        let Some(release) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("vmlinuz-"))
        else {
            continue;
        };
        if modules_dir(root, release).is_dir() {
            return Ok(Some(Kernel {
                image: path.clone(),
                release: release.to_string(),
            }));
        }
    }
    Ok(None)
}

/// Copies the unpacked modules to `/lib/modules/<release>` unless they are
/// already there (virtme-ng only looks there).
fn install_modules(root: &Path, release: &str) -> Result<()> {
    let system = Path::new("/lib/modules").join(release);
    if system.join("modules.dep").is_file() && system.join("kernel/net/openvswitch").is_dir() {
        return Ok(());
    }
    require_root(&format!(
        "installing kernel modules into {}",
        system.display()
    ))?;
    let _ = std::fs::remove_dir_all(&system);
    // A fresh machine (a container image) has no /lib/modules at all.
    std::fs::create_dir_all("/lib/modules").context("creating /lib/modules")?;
    let source = modules_dir(root, release);
    shell::run(
        "cp",
        &["-a", &source.to_string_lossy(), &system.to_string_lossy()],
    )
}
