//! Running a CNI plugin the way a container runtime does: the command and
//! its arguments in `CNI_*` environment variables, the network
//! configuration as JSON on stdin, the result or error as JSON on stdout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::process::{Command, Output};

/// One attachment's parameters, shared by its ADD, CHECK and DEL.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The plugin's executable.
    pub plugin: PathBuf,
    /// `CNI_PATH`: where the plugin finds its IPAM plugin.
    pub cni_path: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: a path such as `/run/netns/<name>` (may be empty for DEL).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The namespace the plugin itself runs in (the node); `None` for ours.
    pub host_netns: Option<String>,
}

impl Attachment {
    /// Runs `command` (ADD, CHECK, DEL, …) with `config` on stdin and
    /// returns what the plugin printed and how it exited.
    pub fn exec(&self, command: &str, config: &Value) -> Result<Output> {
        let mut cmd = Command::new(&self.plugin.to_string_lossy())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_PATH", &self.cni_path);
        if let Some(ns) = &self.host_netns {
            cmd = cmd.in_netns(ns);
        }
        cmd.output_with_input(&serde_json::to_vec(config)?)
    }

    /// Runs `command` and returns its JSON result; fails, with what the
    /// plugin printed, unless it exits 0.
    pub fn call(&self, command: &str, config: &Value) -> Result<Value> {
        let out = self.exec(command, config)?;
        if !out.status.success() {
            bail!(
                "CNI {command} of {} failed ({}): {}{}",
                self.container_id,
                out.status,
                out.stdout,
                out.stderr
            );
        }
        if out.stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&out.stdout).with_context(|| {
            format!(
                "CNI {command} of {} printed no JSON: {}",
                self.container_id, out.stdout
            )
        })
    }
}

/// The path `ip netns` gives namespace `name`.
pub fn netns_path(name: &str) -> String {
    Path::new("/run/netns")
        .join(name)
        .to_string_lossy()
        .into_owned()
}
