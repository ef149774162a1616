//! Running work inside another network namespace.
//!
//! Network namespaces are per thread: a thread that calls setns(2) moves
//! alone, and whatever it opens or spawns afterwards (netlink sockets,
//! `/proc/sys/net` files, iptables processes) belongs to the new namespace.
//! [`in_netns`] runs a closure on a fresh thread moved into a namespace, so
//! the caller's own thread never changes namespace.

use std::fs::File;
use std::io;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

/// Failure to enter a namespace or to get the result back.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("opening namespace {path}: {source}")]
    Open {
        /// Its path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// setns(2) failed.
    #[error("entering namespace {path}: {source}")]
    Enter {
        /// Its path.
        path: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The worker thread panicked.
    #[error("the thread working in namespace {0} panicked")]
    Panicked(String),
    /// The worker thread could not be started.
    #[error("starting a thread: {0}")]
    Spawn(#[source] io::Error),
}

/// The path of a namespace made by `ip netns add <name>`.
pub fn named(name: &str) -> std::path::PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs `work` on a new thread inside the network namespace at `path`
/// (for example `/run/netns/<name>` or `/proc/<pid>/ns/net`) and returns
/// its result.
pub fn in_netns<T, F>(path: &Path, work: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: shown.clone(),
        source,
    })?;
    let name = shown.clone();
    let handle = std::thread::Builder::new()
        .name("netns-worker".into())
        .spawn(move || -> Result<T, NetnsError> {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|source| NetnsError::Enter { path: name, source })?;
            Ok(work())
        })
        .map_err(NetnsError::Spawn)?;
    handle.join().map_err(|_| NetnsError::Panicked(shown))?
}
