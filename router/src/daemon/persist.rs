//! The direct peers (targets) a router was given, kept across restarts so
//! that `--resume` reconnects to them, as `weave launch --resume` does.
//!
//! They live in `<db-prefix>targets.json`, replaced atomically (written to
//! a temporary file, synced, renamed) so a crash leaves the old list or the
//! new one, never a torn file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the targets of a router with this `--db-prefix` are kept.
pub fn targets_path(db_prefix: &Path) -> PathBuf {
    let mut path = db_prefix.as_os_str().to_owned();
    path.push("targets.json");
    PathBuf::from(path)
}

/// The saved targets; none when nothing was saved yet.
pub fn load_targets(path: &Path) -> Result<Vec<String>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a JSON list of peers", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces the saved targets with `targets`.
pub fn save_targets(path: &Path, targets: &[String]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec(targets)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_survive_a_save_and_load() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("weave-persist-{}", std::process::id()));
        let path = targets_path(&dir.join("weave"));
        assert!(path.ends_with("weavetargets.json"));
        assert!(load_targets(&path)?.is_empty());
        save_targets(&path, &["10.0.0.1".into(), "h2:6790".into()])?;
        assert_eq!(load_targets(&path)?, ["10.0.0.1", "h2:6790"]);
        save_targets(&path, &[])?;
        assert!(load_targets(&path)?.is_empty());
        std::fs::write(&path, b"{not json")?;
        assert!(load_targets(&path).is_err());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
