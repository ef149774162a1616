//! `weave-ipam`: the CNI IPAM plugin that asks weave-router for addresses.

fn main() {
    weave_cni::unsupported("weave-ipam")
}
