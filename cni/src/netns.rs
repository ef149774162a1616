//! Working inside the container's network namespace.
//!
//! Namespaces are per thread: [`in_netns`] runs a closure on a fresh thread
//! that setns(2)es into the namespace, so the plugin's own thread never
//! changes namespace.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
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
    /// setns(2) failed (the file is not a network namespace, say).
    #[error("entering namespace {path}: {source}")]
    Enter {
        /// Its path.
        path: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The worker thread panicked or could not start.
    #[error("working in namespace {0}: thread failed")]
    Thread(String),
}

impl NetnsError {
    /// Whether the namespace simply does not exist (any more).
    pub fn is_gone(&self) -> bool {
        match self {
            NetnsError::Open { source, .. } => source.kind() == io::ErrorKind::NotFound,
            NetnsError::Enter { source, .. } => *source == nix::Error::EINVAL,
            NetnsError::Thread(_) => false,
        }
    }
}

/// An open namespace file.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: String,
}

impl Netns {
    /// Opens the namespace at `path`.
    pub fn open(path: &str) -> Result<Netns, NetnsError> {
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_string(),
            source,
        })?;
        Ok(Netns {
            file,
            path: path.to_string(),
        })
    }

    /// Its path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The open file (for `IFLA_NET_NS_FD`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Whether it is the namespace this process runs in.
    pub fn is_current(&self) -> bool {
        let mine = std::fs::metadata("/proc/self/ns/net");
        match (self.file.metadata(), mine) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        }
    }

    /// Runs `work` on a thread inside the namespace and returns its result.
    pub fn run<T, F>(&self, work: F) -> Result<T, NetnsError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let file = self.file.try_clone().map_err(|source| NetnsError::Open {
            path: self.path.clone(),
            source,
        })?;
        let path = self.path.clone();
        let handle = std::thread::Builder::new()
            .name("netns-worker".into())
            .spawn(move || -> Result<T, NetnsError> {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|source| NetnsError::Enter { path, source })?;
                Ok(work())
            })
            .map_err(|_| NetnsError::Thread(self.path.clone()))?;
        handle
            .join()
            .map_err(|_| NetnsError::Thread(self.path.clone()))?
    }
}

/// Runs `work` inside the namespace at `path`.
pub fn in_netns<T, F>(path: &Path, work: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    Netns::open(&path.display().to_string())?.run(work)
}
