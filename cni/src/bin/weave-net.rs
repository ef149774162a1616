//! `weave-net`: the CNI plugin that attaches a container to the weave bridge.

fn main() {
    std::process::exit(weave_cni::invoke(weave_cni::Plugin::Net))
}
