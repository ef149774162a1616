//! `cargo xtask`: automation for the weave-rs workspace.
fn main() {}
