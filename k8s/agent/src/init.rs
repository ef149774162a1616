//! `weave-kube init`: the init container's work, as Weave's `init.sh` did
//! it. Load `br_netfilter` (and `xt_set` when weave-npc runs), make
//! bridged traffic pass iptables (`net.bridge.bridge-nf-call-iptables=1`,
//! which kube-proxy and the policy controller need), install the CNI
//! plugins under `HOST_ROOT` and write `10-weave.conflist` only if absent,
//! and remove an old `10-weave.conf`.
//!
//! The installing is `weave_cni::install`, the same code as
//! `weave-router install-cni`.

use std::path::{Path, PathBuf};
use std::process::Command;

use tracing::{info, warn};
use weave_cni::install::{InstallOptions, Installed, install_with};
use weave_router::net::sysctl::Sysctl;

use crate::config::Config;

/// What init did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// Where the plugins went.
    pub plugin_dir: PathBuf,
    /// Where the configuration is.
    pub conf_dir: PathBuf,
    /// What happened to the configuration.
    pub installed: Installed,
    /// Whether bridge-nf-call-iptables is on (false: the kernel lacks
    /// br_netfilter; policy and kube-proxy may then miss bridged traffic).
    pub bridge_nf: bool,
}

/// A failed init.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Neither plugin directory could be made.
    #[error("cannot create {tried} or its fallback {fallback}: {source}")]
    PluginDir {
        /// The usual directory.
        tried: String,
        /// The GKE-style fallback.
        fallback: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Installing failed.
    #[error("installing the CNI plugins: {0}")]
    Install(#[from] weave_cni::install::InstallError),
    /// The sysctl exists but cannot be written.
    #[error("{0}")]
    Sysctl(#[from] weave_router::net::sysctl::SysctlError),
    /// This executable's directory is unknown.
    #[error("finding the plugin binaries next to this executable: {0}")]
    NoExe(std::io::Error),
}

fn modprobe(module: &str) {
    match Command::new("modprobe").arg(module).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => warn!(
            module,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "modprobe failed; fine if the module is built into the kernel"
        ),
        Err(error) => warn!(module, %error, "cannot run modprobe; fine if the module is built in"),
    }
}

/// The plugin directory under `host_root`: `opt/cni/bin`, or
/// `home/kubernetes/bin` where the first cannot be created (GKE's
/// read-only `/opt`), as init.sh chose.
pub fn plugin_dir(host_root: &Path) -> Result<PathBuf, InitError> {
    let usual = host_root.join("opt/cni/bin");
    match std::fs::create_dir_all(&usual) {
        Ok(()) => Ok(usual),
        Err(first) => {
            let fallback = host_root.join("home/kubernetes/bin");
            std::fs::create_dir_all(&fallback).map_err(|_| InitError::PluginDir {
                tried: usual.display().to_string(),
                fallback: fallback.display().to_string(),
                source: first,
            })?;
            Ok(fallback)
        }
    }
}

/// Installs the plugins from `binaries_from` and the configuration under
/// `config.host_root`.
pub fn install_cni(
    config: &Config,
    binaries_from: &Path,
) -> Result<(PathBuf, PathBuf, Installed), InitError> {
    let plugins = plugin_dir(&config.host_root)?;
    let conf = config.host_root.join("etc/cni/net.d");
    let options = InstallOptions {
        hairpin_mode: config.hairpin_mode,
        keep_existing_conflist: true,
        remove_old_conf: true,
    };
    let installed = install_with(&plugins, &conf, binaries_from, options)?;
    Ok((plugins, conf, installed))
}

/// Runs the whole init: modules, sysctl, CNI.
pub fn run(config: &Config, binaries_from: Option<&Path>) -> Result<InitReport, InitError> {
    modprobe("br_netfilter");
    if config.expect_npc {
        modprobe("xt_set");
    }
    let bridge_nf = Sysctl::default().set_if_exists("net/bridge/bridge-nf-call-iptables", "1")?;
    if !bridge_nf {
        warn!(
            "no net.bridge.bridge-nf-call-iptables (br_netfilter missing): network policy and \
             iptables-mode kube-proxy may not see traffic between pods on one node"
        );
    }
    let from = match binaries_from {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_exe()
            .map_err(InitError::NoExe)?
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| InitError::NoExe(std::io::Error::other("no parent directory")))?,
    };
    let (plugin_dir, conf_dir, installed) = install_cni(config, &from)?;
    info!(
        plugins = %plugin_dir.display(),
        conf = %conf_dir.display(),
        wrote_conflist = installed.wrote_conflist,
        removed_old_conf = installed.removed_old_conf,
        "CNI plugins installed"
    );
    Ok(InitReport {
        plugin_dir,
        conf_dir,
        installed,
        bridge_nf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_under_host_root_and_keeps_the_operators_conflist() {
        let root = std::env::temp_dir().join(format!("weave-kube-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let from = root.join("image");
        std::fs::create_dir_all(&from).unwrap();
        for name in weave_cni::install::BINARIES {
            std::fs::write(from.join(name), name).unwrap();
        }
        let host = root.join("host");
        let host_text = host.to_string_lossy().into_owned();
        let config = Config::from_vars(&|var| match var {
            "HOST_ROOT" => Some(host_text.clone()),
            "HAIRPIN_MODE" => Some("false".into()),
            _ => None,
        })
        .unwrap();
        let (plugins, conf, done) = install_cni(&config, &from).unwrap();
        assert_eq!(plugins, host.join("opt/cni/bin"));
        assert!(done.wrote_conflist);
        assert!(plugins.join("weave-net").exists() && plugins.join("weave-ipam").exists());
        let text = std::fs::read_to_string(conf.join("10-weave.conflist")).unwrap();
        assert!(text.contains("\"hairpinMode\": false"), "{text}");
        std::fs::write(conf.join("10-weave.conflist"), "mine").unwrap();
        let (_, _, done) = install_cni(&config, &from).unwrap();
        assert!(!done.wrote_conflist);
        // A file where opt/ should be: the fallback directory is used.
        let host2 = root.join("host2");
        std::fs::create_dir_all(&host2).unwrap();
        std::fs::write(host2.join("opt"), "not a directory").unwrap();
        assert_eq!(
            plugin_dir(&host2).unwrap(),
            host2.join("home/kubernetes/bin")
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
