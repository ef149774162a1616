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

/// Copies `weave-net` and `weave-ipam` from `binaries_from` into
/// `plugin_dir` and writes `conf_dir/10-weave.conflist`, each atomically,
/// creating the directories if needed. A running plugin keeps its old
/// binary; the next invocation gets the new one.
pub fn install(
    plugin_dir: &Path,
    conf_dir: &Path,
    binaries_from: &Path,
) -> Result<(), InstallError> {
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
    let mut text = serde_json::to_string_pretty(&conflist(true)).unwrap_or_default();
    text.push('\n');
    write_atomic(&conf_dir.join(CONFLIST), text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

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
