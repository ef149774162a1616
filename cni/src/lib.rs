//! The weave-rs CNI plugins, `weave-net` and `weave-ipam`.
//!
//! Both binaries follow the CNI 1.1 protocol: the command in `CNI_COMMAND`,
//! the network configuration on stdin, a JSON result or error on stdout.

use serde::Serialize;

/// A CNI error as the runtime reads it from stdout.
#[derive(Debug, Serialize)]
pub struct CniError {
    /// The CNI version the error is reported in.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// A well-known CNI error code (1–11, 50, 51) or a plugin-specific one (100+).
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// Longer details, possibly empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// Prints `error` on stdout (where libcni reads it) and exits non-zero.
pub fn fail(error: &CniError) -> ! {
    match serde_json::to_string(error) {
        Ok(text) => println!("{text}"),
        Err(_) => println!("{{\"code\":{},\"msg\":\"internal error\"}}", error.code),
    }
    std::process::exit(1)
}

/// Runs a plugin that does not support any command yet.
pub fn unsupported(plugin: &str) -> ! {
    fail(&CniError {
        cni_version: "1.1.0".into(),
        code: 4,
        msg: format!("{plugin}: CNI_COMMAND is not supported yet"),
        details: String::new(),
    })
}
