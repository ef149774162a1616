//! `weave-net`: the CNI plugin that attaches a container to the weave bridge.

fn main() {
    weave_cni::unsupported("weave-net")
}
