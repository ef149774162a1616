//! Address releases deferred while weave-router cannot be reached.
//!
//! A DEL must succeed even when the router is down (a node whose router
//! crashed must still drain its pods), but only the router can free an
//! address. So DEL removes what is local (the veth, the registration
//! attempt) and, when the router does not answer, leaves a record: a file
//! named by the container id in a directory both sides know (the
//! configuration's `ipam.pendingReleaseDir`, the router's
//! `--pending-release-dir`, both [`DEFAULT_DIR`] by default). The router
//! drains the directory when it starts, before its HTTP API answers, and
//! again every few seconds while it runs: it frees each recorded id's
//! addresses and then removes the record.
//!
//! Every change to the directory happens under an exclusive `flock` on
//! its `.lock` file, which is what makes the hand-over exact:
//! - the router holds the lock from reading a record until it has freed
//!   the id and removed the record, so a release is never lost, and a
//!   record left by a router killed in between is released again (by id,
//!   which frees nothing the second time);
//! - an ADD for an id with a record (a runtime re-using a container id
//!   after a DEL the router never saw) cancels the record under the lock
//!   before asking for an address: the allocator then hands back the id's
//!   old address, and no later drain frees it under the live container.
//!
//! Only container ids the CNI environment accepts
//! ([`valid_container_id`]) are recorded; they cannot name a path outside
//! the directory, nor the lock or temporary files (those start with `.`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::env::valid_container_id;

/// Where records are kept unless the configuration says otherwise: on the
/// host's disk (not `/run`), so a record outlives a reboot of the node,
/// as the router's allocations do.
pub const DEFAULT_DIR: &str = "/var/lib/cni/weave-rs/pending-release";

const LOCK_FILE: &str = ".lock";

/// The directory of deferred releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDir {
    dir: PathBuf,
}

/// The directory, locked: held while records are read, written or
/// removed. Dropping it unlocks.
#[derive(Debug)]
pub struct Locked {
    dir: PathBuf,
    _lock: File,
}

fn invalid_id(id: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{id:?} is not a container id"),
    )
}

impl PendingDir {
    /// The directory at `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> PendingDir {
        PendingDir { dir: dir.into() }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether a record for `id` exists (without the lock: a hint that
    /// [`Locked::cancel`] is worth the lock).
    pub fn has_record(&self, id: &str) -> bool {
        valid_container_id(id) && self.dir.join(id).exists()
    }

    /// Creates the directory if needed and takes its lock, waiting for
    /// whoever holds it.
    pub fn lock(&self) -> io::Result<Locked> {
        std::fs::create_dir_all(&self.dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK_FILE))?;
        loop {
            // SAFETY: flock(2) on a descriptor we own for the call's length.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        Ok(Locked {
            dir: self.dir.clone(),
            _lock: file,
        })
    }
}

impl Locked {
    /// Records that `id`'s addresses are to be freed. Written to a
    /// temporary file and renamed, so a reader never sees half a record.
    pub fn defer(&self, id: &str) -> io::Result<()> {
        if !valid_container_id(id) {
            return Err(invalid_id(id));
        }
        let body = serde_json::json!({ "containerID": id }).to_string();
        let tmp = self.dir.join(format!(".tmp-{id}-{}", std::process::id()));
        let mut file = File::create(&tmp)?;
        file.write_all(body.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(id))
    }

    /// Removes `id`'s record; `Ok(true)` if there was one.
    pub fn cancel(&self, id: &str) -> io::Result<bool> {
        if !valid_container_id(id) {
            return Ok(false);
        }
        match std::fs::remove_file(self.dir.join(id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The ids with a record, sorted. Files that are not records (the
    /// lock, temporary files, names that are no container id) are skipped.
    pub fn records(&self) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str()
                && valid_container_id(name)
            {
                ids.push(name.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PendingDir {
        let dir =
            std::env::temp_dir().join(format!("weave-cni-pending-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        PendingDir::new(dir)
    }

    #[test]
    fn defer_list_cancel() {
        let pending = scratch("basic");
        assert!(!pending.has_record("c1"));
        {
            let locked = pending.lock().unwrap();
            assert_eq!(locked.records().unwrap(), Vec::<String>::new());
            locked.defer("c2").unwrap();
            locked.defer("c1").unwrap();
            locked.defer("c1").unwrap();
            assert_eq!(locked.records().unwrap(), ["c1", "c2"]);
        }
        assert!(pending.has_record("c1"));
        let locked = pending.lock().unwrap();
        assert!(locked.cancel("c1").unwrap());
        assert!(!locked.cancel("c1").unwrap());
        assert_eq!(locked.records().unwrap(), ["c2"]);
        drop(locked);
        std::fs::remove_dir_all(pending.path()).unwrap();
    }

    #[test]
    fn ids_that_could_escape_the_directory_are_refused() {
        let pending = scratch("escape");
        let locked = pending.lock().unwrap();
        for id in ["../x", ".lock", "", "a/b"] {
            assert!(locked.defer(id).is_err(), "{id:?}");
            assert!(!locked.cancel(id).unwrap(), "{id:?}");
        }
        assert!(locked.records().unwrap().is_empty());
        drop(locked);
        std::fs::remove_dir_all(pending.path()).unwrap();
    }

    #[test]
    fn the_lock_excludes_a_second_holder() {
        let pending = scratch("lock");
        let locked = pending.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = pending.clone();
        let waiter = std::thread::spawn(move || {
            let _second = other.lock().unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "a second lock while the first is held"
        );
        drop(locked);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
        std::fs::remove_dir_all(pending.path()).unwrap();
    }
}
