//! `weave-ipam`: the CNI IPAM plugin that asks weave-router for addresses.

fn main() {
    std::process::exit(weave_cni::invoke(weave_cni::Plugin::Ipam))
}
