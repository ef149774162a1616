//! netlab: multi-host test labs built from network namespaces.
//!
//! A [`Lab`] is a set of "hosts", each a network namespace with an `eth0`
//! on a shared underlay subnet. The hosts are joined by veth pairs to a
//! Linux bridge that lives in a hub namespace of its own, so a lab never
//! touches the machine's own interfaces and several labs can run side by
//! side. Processes started in a host are tracked; everything the lab made
//! (processes, namespaces and the links inside them) is removed when the
//! lab is dropped, including when a test panics. Namespaces left over by a
//! test process that was killed outright are swept by the next lab.
//!
//! The library only drives `ip` (iproute2) and ordinary processes, so it
//! works the same on the host kernel and inside the VM that
//! `cargo xtask vm` boots.
//!
//! ```no_run
//! use std::time::Duration;
//! let lab = weave_tests::Lab::new(2)?;
//! let (a, b) = (lab.host(0), lab.host(1));
//! a.run(&["ping", "-c1", "-W2", &b.underlay_ip().to_string()])?;
//! weave_tests::wait_for(Duration::from_secs(5), "b answers ping", || {
//!     Ok(a.run(&["ping", "-c1", "-W1", &b.underlay_ip().to_string()]).is_ok())
//! })?;
//! # anyhow::Ok(())
//! ```

pub mod cni;
pub mod counters;
mod lab;
mod netns;
mod process;
mod wait;

pub use lab::{Host, Lab, LabBuilder};
pub use netns::{Netns, require_root};
pub use process::{Command, Output, Process};
pub use wait::wait_for;
