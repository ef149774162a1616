//! The host side of the router: the weave bridge (in its three shapes),
//! links and addresses, and the host firewall rules.
//!
//! # Why a synchronous rtnetlink layer of our own
//!
//! Links are managed through [`rtnl::Rtnl`], a small blocking client built
//! on `netlink-packet-route` (message types) and `netlink-sys` (the
//! socket), rather than on the async `rtnetlink` crate:
//!
//! - the work is a short, strictly ordered sequence of requests at start-up
//!   and on `reset`/`expose`; nothing is gained from futures, and a blocking
//!   call is trivial to run from `spawn_blocking` in the daemon;
//! - a netlink socket stays in the network namespace it was opened in, so a
//!   plain value that owns its socket can be opened inside a namespace (see
//!   [`netns`]) and then used from anywhere: no background connection task
//!   whose runtime thread might sit in another namespace;
//! - one dependency fewer on an async runtime version, and error handling we
//!   control (every kernel refusal keeps its errno and the request in words).
//!
//! # Layout
//!
//! - [`plan`]: the pure planner: bridge types, options, detected state →
//!   steps or a typed refusal naming the fix; fallback to Bridge when the
//!   kernel has no openvswitch.
//! - [`setup`]: detection and the executor of the steps.
//! - [`datapath`]: the [`datapath::DatapathOps`] trait the odp-backed driver
//!   implements, and the openvswitch probe.
//! - [`teardown`]: the `reset` command.
//! - [`firewall`]: host rules (iptables in the host's variant).
//! - [`link`], [`rtnl`], [`sysctl`], [`ethtool`], [`netns`]: the mechanisms.
//! - [`expose`]: `POST /expose/{ip}/{prefix}`.

pub mod datapath;
pub mod ethtool;
pub mod expose;
pub mod firewall;
pub mod link;
pub mod netns;
pub mod odp_datapath;
pub mod plan;
pub mod rtnl;
pub mod setup;
pub mod sysctl;
pub mod teardown;
