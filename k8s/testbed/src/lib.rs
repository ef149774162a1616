//! The Kubernetes test bed: what makes pods here as a cluster makes them.
//!
//! - [`containerd`]: a containerd per test host (Debian's 1.6, which
//!   serves the CRI v1 that kubelet uses), with its own root, state,
//!   socket and CNI directories, torn down completely on drop;
//! - [`image`]: the pause image, built here from busybox-static as a
//!   one-layer OCI archive and imported with `ctr`;
//! - [`cri`]: the CRI client (k8s-cri, tonic);
//! - [`kubelet`]: the test kubelet (`weave-test-kubelet`) that turns the
//!   API double's Pods into CRI sandboxes and writes their status back;
//! - [`node`]: a test host with all of that plus weave-router and the
//!   weave-net plugin.

pub mod containerd;
pub mod cri;
pub mod image;
pub mod kubelet;
pub mod node;
