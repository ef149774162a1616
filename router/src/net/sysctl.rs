//! Kernel settings under `/proc/sys`.
//!
//! The `net/` settings are per network namespace, and the kernel resolves
//! them by the namespace of the thread that opens the file, so these writes
//! land in whichever namespace the calling thread is in.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A sysctl write that failed.
#[derive(Debug, thiserror::Error)]
#[error("writing {value:?} to {path}: {source}")]
pub struct SysctlError {
    /// The file written.
    pub path: String,
    /// The value.
    pub value: String,
    /// Why it failed.
    #[source]
    pub source: io::Error,
}

/// Where sysctls live: normally `/proc`, another path when the host's proc
/// is mounted elsewhere (Weave's `--proc-path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    root: PathBuf,
}

impl Default for Sysctl {
    fn default() -> Self {
        Sysctl::new("/proc")
    }
}

impl Sysctl {
    /// Settings under `<proc_path>/sys`.
    pub fn new(proc_path: impl AsRef<Path>) -> Sysctl {
        Sysctl {
            root: proc_path.as_ref().join("sys"),
        }
    }

    fn path(&self, variable: &str) -> PathBuf {
        self.root.join(variable)
    }

    /// Writes `value` to `variable` (a path like `net/ipv4/conf/weave/...`).
    pub fn set(&self, variable: &str, value: &str) -> Result<(), SysctlError> {
        let path = self.path(variable);
        let err = |source| SysctlError {
            path: path.display().to_string(),
            value: value.to_string(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(err)?;
        file.write_all(value.as_bytes()).map_err(err)
    }

    /// Like [`Sysctl::set`], but a variable that does not exist (IPv6
    /// disabled, say) is skipped; returns whether it was written.
    pub fn set_if_exists(&self, variable: &str, value: &str) -> Result<bool, SysctlError> {
        match self.set(variable, value) {
            Ok(()) => Ok(true),
            Err(e) if e.source.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads `variable`, trimmed.
    pub fn get(&self, variable: &str) -> Result<String, SysctlError> {
        let path = self.path(variable);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|source| SysctlError {
                path: path.display().to_string(),
                value: String::new(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_variables_are_skipped_only_when_asked() {
        let dir = std::env::temp_dir().join(format!("weave-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sys/net")).unwrap();
        std::fs::write(dir.join("sys/net/x"), "0\n").unwrap();
        let sysctl = Sysctl::new(&dir);
        sysctl.set("net/x", "1").unwrap();
        assert_eq!(sysctl.get("net/x").unwrap(), "1");
        assert!(!sysctl.set_if_exists("net/y", "1").unwrap());
        assert!(sysctl.set("net/y", "1").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
