//! Frees the addresses whose release the CNI plugin left for the router
//! while it could not reach it (the protocol is in [`weave_cni::pending`]).
//!
//! At start-up the router takes the directory's lock, reads the records
//! and queues a release for each before its HTTP API binds, so no
//! allocation can be served ahead of them; a task then waits for the
//! allocator's answers, removes the records and unlocks. While the router
//! runs it drains the directory again every [`DRAIN_INTERVAL`] (a DEL
//! that found the router restarting, or not ready, leaves records then).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use weave_cni::pending::{Locked, PendingDir};

use super::actor::{Control, Event, IpamCall};
use crate::ipam::Reply;

/// How often a running router looks for new records.
pub const DRAIN_INTERVAL: Duration = Duration::from_secs(5);

/// Releases queued under the directory's lock, waiting for the allocator.
pub struct Queued {
    locked: Locked,
    releases: Vec<(String, oneshot::Receiver<Result<Reply, String>>)>,
}

/// Why a drain did not run.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The directory could not be locked or read.
    #[error("pending releases in {dir}: {source}")]
    Dir {
        /// The directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The locking thread failed.
    #[error("pending releases: {0}")]
    Task(String),
}

/// Locks `dir`, reads its records and queues a release of each id on the
/// router's event queue. Returns at once when there are none, and when
/// the directory does not exist (the plugin creates it with its first
/// record; the router leaves the host's file system alone until then).
pub async fn queue(
    dir: &PendingDir,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<Option<Queued>, DrainError> {
    if !dir.path().is_dir() {
        return Ok(None);
    }
    let owned = dir.clone();
    let (locked, ids) = tokio::task::spawn_blocking(move || {
        let locked = owned.lock()?;
        let ids = locked.records()?;
        Ok::<_, std::io::Error>((locked, ids))
    })
    .await
    .map_err(|e| DrainError::Task(e.to_string()))?
    .map_err(|source| DrainError::Dir {
        dir: dir.path().display().to_string(),
        source,
    })?;
    if ids.is_empty() {
        return Ok(None);
    }
    let mut releases = Vec::with_capacity(ids.len());
    for ident in ids {
        // The registration too, in case the DEL found us up but not ready
        // (a restarted router has none).
        let (removed, _) = oneshot::channel();
        let forget = Control::ContainerRemoved {
            id: ident.clone(),
            reply: removed,
        };
        let _ = events.send(Event::Control(forget));
        let (reply, answer) = oneshot::channel();
        let call = IpamCall::Delete {
            ident: ident.clone(),
        };
        if events
            .send(Event::Control(Control::Ipam { call, reply }))
            .is_err()
        {
            break;
        }
        releases.push((ident, answer));
    }
    Ok(Some(Queued { locked, releases }))
}

/// Waits for the queued releases, removes the records of those done and
/// unlocks. An id without addresses counts as done (it was freed before,
/// e.g. by a router killed before it removed the record).
pub async fn finish(queued: Queued) {
    let Queued { locked, releases } = queued;
    let mut done = Vec::new();
    for (ident, answer) in releases {
        match answer.await {
            Ok(Ok(_)) => {
                info!(%ident, "freed the addresses of a container deleted while the router was down");
                done.push(ident);
            }
            Ok(Err(error)) if error.contains("no addresses for") => done.push(ident),
            Ok(Err(error)) => warn!(%ident, %error, "deferred release failed; kept for a retry"),
            Err(_) => warn!(%ident, "deferred release not answered; kept for a retry"),
        }
    }
    let removed = tokio::task::spawn_blocking(move || {
        for ident in &done {
            if let Err(error) = locked.cancel(ident) {
                warn!(%ident, %error, "removing a deferred release record");
            }
        }
        drop(locked);
    })
    .await;
    if let Err(error) = removed {
        warn!(%error, "removing deferred release records");
    }
}

/// Drains `dir` every [`DRAIN_INTERVAL`] until the router stops.
pub async fn drain_forever(dir: PendingDir, events: mpsc::UnboundedSender<Event>) {
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match queue(&dir, &events).await {
            Ok(Some(queued)) => finish(queued).await,
            Ok(None) => {}
            Err(error) => warn!(%error, "draining deferred releases"),
        }
        if events.is_closed() {
            return;
        }
    }
}
