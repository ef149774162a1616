//! Installing the plugins: the binaries into the runtime's plugin directory
//! and Weave's network configuration list, `10-weave.conflist`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The configuration list's file name, as Weave shipped it.
pub const CONFLIST: &str = "10-weave.conflist";

/// The plugin binaries installed.
pub const BINARIES: [&str; 2] = ["weave-net", "weave-ipam"];

/// What went wrong installing.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct InstallError {
    /// The step.
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// The configuration list: `weave-net` chained with `portmap`, as Weave's
/// (`cniVersion` 1.0.0, which the reference plugins of Debian bookworm
/// still speak; `weave-net` speaks up to 1.1.0).
pub fn conflist(hairpin_mode: bool) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "weave",
        "plugins": [
            {
                "name": "weave",
                "type": "weave-net",
                "hairpinMode": hairpin_mode,
            },
            {
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true,
            },
        ],
    })
}

/// Writes `data` to `dest` atomically (a temporary file in the same
/// directory, synced, then renamed over `dest`) with `mode`.
fn write_atomic(dest: &Path, data: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let err = |what, source| InstallError {
        what,
        path: tmp.clone(),
        source,
    };
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(|e| err("creating", e))?;
        file.write_all(data).map_err(|e| err("writing", e))?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| err("setting the mode of", e))?;
        file.sync_all().map_err(|e| err("syncing", e))?;
        fs::rename(&tmp, dest).map_err(|source| InstallError {
            what: "renaming into place",
            path: dest.to_path_buf(),
            source,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The configuration file Weave Net before 2.x wrote, which the
/// Kubernetes init container removes (a runtime would load it first).
pub const OLD_CONF: &str = "10-weave.conf";

/// How [`install_with`] treats the network configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallOptions {
    /// The `hairpinMode` written into the configuration list.
    pub hairpin_mode: bool,
    /// Leave an existing `10-weave.conflist` as it is (the Kubernetes init
    /// container's rule: an operator's edits survive upgrades).
    pub keep_existing_conflist: bool,
    /// Remove an old `10-weave.conf`.
    pub remove_old_conf: bool,
}

impl Default for InstallOptions {
    /// What `weave-router install-cni` does: hairpin on, the list always
    /// rewritten, an old `.conf` left alone.
    fn default() -> Self {
        InstallOptions {
            hairpin_mode: true,
            keep_existing_conflist: false,
            remove_old_conf: false,
        }
    }
}

/// What [`install_with`] did to the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// Whether `10-weave.conflist` was written (false: it existed and was
    /// kept).
    pub wrote_conflist: bool,
    /// Whether an old `10-weave.conf` was removed.
    pub removed_old_conf: bool,
}

/// Copies `weave-net` and `weave-ipam` from `binaries_from` into
/// `plugin_dir` and writes `conf_dir/10-weave.conflist`, each atomically,
/// creating the directories if needed. A running plugin keeps its old
/// binary; the next invocation gets the new one.
pub fn install(
    plugin_dir: &Path,
    conf_dir: &Path,
    binaries_from: &Path,
) -> Result<(), InstallError> {
    install_with(
        plugin_dir,
        conf_dir,
        binaries_from,
        InstallOptions::default(),
    )
    .map(|_| ())
}

/// [`install`], with the configuration handled as `options` say.
pub fn install_with(
    plugin_dir: &Path,
    conf_dir: &Path,
    binaries_from: &Path,
    options: InstallOptions,
) -> Result<Installed, InstallError> {
    for dir in [plugin_dir, conf_dir] {
        fs::create_dir_all(dir).map_err(|source| InstallError {
            what: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    for name in BINARIES {
        let src = binaries_from.join(name);
        let data = fs::read(&src).map_err(|source| InstallError {
            what: "reading",
            path: src.clone(),
            source,
        })?;
        write_atomic(&plugin_dir.join(name), &data, 0o755)?;
    }
    let mut done = Installed {
        wrote_conflist: false,
        removed_old_conf: false,
    };
    if options.remove_old_conf {
        let old = conf_dir.join(OLD_CONF);
        match fs::remove_file(&old) {
            Ok(()) => done.removed_old_conf = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(InstallError {
                    what: "removing",
                    path: old,
                    source,
                });
            }
        }
    }
    let dest = conf_dir.join(CONFLIST);
    if options.keep_existing_conflist && dest.exists() {
        return Ok(done);
    }
    let mut text =
        serde_json::to_string_pretty(&conflist(options.hairpin_mode)).unwrap_or_default();
    text.push('\n');
    write_atomic(&dest, text.as_bytes(), 0o644)?;
    done.wrote_conflist = true;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_init_keeps_an_existing_conflist() {
        let root = std::env::temp_dir().join(format!("weave-cni-keep-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let from = root.join("build");
        fs::create_dir_all(&from).unwrap();
        for name in BINARIES {
            fs::write(from.join(name), name).unwrap();
        }
        let (bin, conf) = (root.join("bin"), root.join("net.d"));
        let options = InstallOptions {
            hairpin_mode: false,
            keep_existing_conflist: true,
            remove_old_conf: true,
        };
        fs::create_dir_all(&conf).unwrap();
        fs::write(conf.join(OLD_CONF), "{}").unwrap();
        let done = install_with(&bin, &conf, &from, options).unwrap();
        assert!(done.wrote_conflist && done.removed_old_conf);
        assert!(!conf.join(OLD_CONF).exists());
        let list: Value = serde_json::from_slice(&fs::read(conf.join(CONFLIST)).unwrap()).unwrap();
        assert_eq!(list["plugins"][0]["hairpinMode"], false);
        fs::write(conf.join(CONFLIST), "edited by the operator").unwrap();
        let done = install_with(&bin, &conf, &from, options).unwrap();
        assert!(!done.wrote_conflist && !done.removed_old_conf);
        assert_eq!(
            fs::read_to_string(conf.join(CONFLIST)).unwrap(),
            "edited by the operator"
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn installs_binaries_and_conflist() {
        let root = std::env::temp_dir().join(format!("weave-cni-install-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let from = root.join("build");
        fs::create_dir_all(&from).unwrap();
        for name in BINARIES {
            fs::write(from.join(name), format!("#!/bin/sh\necho {name}\n")).unwrap();
        }
        let (bin, conf) = (root.join("opt/cni/bin"), root.join("etc/cni/net.d"));
        install(&bin, &conf, &from).unwrap();
        // Twice: replacing is fine.
        install(&bin, &conf, &from).unwrap();
        for name in BINARIES {
            let meta = fs::metadata(bin.join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o755);
            assert!(fs::read_to_string(bin.join(name)).unwrap().contains(name));
        }
        let list: Value = serde_json::from_slice(&fs::read(conf.join(CONFLIST)).unwrap()).unwrap();
        assert_eq!(list["plugins"][0]["type"], "weave-net");
        assert_eq!(list["plugins"][1]["type"], "portmap");
        assert_eq!(list["plugins"][1]["capabilities"]["portMappings"], true);
        assert_eq!(list["cniVersion"], "1.0.0");
        let leftovers: Vec<_> = fs::read_dir(&bin)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
        let missing = install(&bin, &conf, &root.join("nowhere")).unwrap_err();
        assert_eq!(missing.what, "reading");
        fs::remove_dir_all(&root).unwrap();
    }
}
