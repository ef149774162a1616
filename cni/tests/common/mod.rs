//! A small CNI runtime for tests, following the spec's section 3 on
//! network configuration lists (ADD through the chain with `prevResult`,
//! CHECK, DEL in reverse with the ADD result, GC, STATUS), and helpers to
//! run weave-router in netlab hosts.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use weave_tests::{Host, Process};

pub const WEAVE_NET: &str = env!("CARGO_BIN_EXE_weave-net");
pub const WEAVE_IPAM: &str = env!("CARGO_BIN_EXE_weave-ipam");
/// Where Debian's containernetworking-plugins live.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// The weave-router binary of this build (built here if missing), or
/// `WEAVE_ROUTER_BIN`.
pub fn router_bin() -> Result<PathBuf> {
    if let Ok(bin) = std::env::var("WEAVE_ROUTER_BIN") {
        return Ok(bin.into());
    }
    // The plugins sit next to weave-router in the target directory.
    let dir = Path::new(WEAVE_NET).parent().context("plugin path")?;
    let bin = dir.join("weave-router");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "weave-router", "--bin", "weave-router"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .context("building weave-router")?;
        if !status.success() {
            bail!("building weave-router failed ({status})");
        }
    }
    Ok(bin)
}

/// Starts weave-router on `host` in Bridge mode, peered with `peers`.
pub fn start_router(host: &Host, extra: &[&str], peers: &[&Host]) -> Result<Process> {
    let mut args = vec!["--no-fastdp"];
    args.extend_from_slice(extra);
    start_router_with(host, &args, peers)
}

/// Starts weave-router on `host` with exactly `extra` (fastdp unless it
/// says otherwise), peered with `peers`.
pub fn start_router_with(host: &Host, extra: &[&str], peers: &[&Host]) -> Result<Process> {
    let bin = router_bin()?;
    let db = format!(
        "/tmp/netns-cni-{}-{}/weave",
        std::process::id(),
        host.netns()
    );
    let mut argv: Vec<String> = vec![
        bin.display().to_string(),
        "--name".into(),
        format!("00:00:00:00:00:{:02x}", host.index() + 1),
        "--nickname".into(),
        format!("h{}", host.index()),
        "--db-prefix".into(),
        db,
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv.extend(peers.iter().map(|p| p.underlay_ip().to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    host.spawn("router", &argv)
}

/// GETs `path` from the router on `host`; `None` on an HTTP error status.
pub fn http(host: &Host, method: &str, path: &str) -> Result<Option<String>> {
    let url = format!("http://127.0.0.1:6784{path}");
    let out = host
        .cmd("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            &url,
        ])
        .output()?;
    if !out.status.success() {
        bail!("curl {url}: {}", out.stderr);
    }
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", ""));
    Ok(code.starts_with('2').then(|| body.to_string()))
}

/// Waits until the router on `host` allocates (its IPAM answers). Under
/// software emulation (the VM) a debug router takes tens of seconds to set
/// up its bridge, datapath and host rules before the API listens.
pub fn wait_router(host: &Host, router: &Process) -> Result<()> {
    weave_tests::wait_for(Duration::from_secs(90), "the router's HTTP API", || {
        Ok(http(host, "GET", "/ipinfo/defaultsubnet").is_ok_and(|r| r.is_some()))
    })
    .with_context(|| format!("router log:\n{}", tail(&router.log(), 30)))
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What a plugin invocation printed and how it exited.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Invocation {
    /// Its stdout as JSON (Null when empty).
    pub fn json(&self) -> Result<Value> {
        if self.stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "plugin output is not JSON: {:?} (stderr {:?})",
                self.stdout, self.stderr
            )
        })
    }

    /// The CNI error code of a failed invocation.
    pub fn code(&self) -> Result<u64> {
        if self.success {
            bail!("expected a failure, got success: {}", self.stdout);
        }
        self.json()?["code"]
            .as_u64()
            .with_context(|| format!("error without a code: {}", self.stdout))
    }
}

/// A CNI runtime that runs plugins inside a lab host's namespace.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The namespace the runtime (and so the plugins) runs in.
    pub netns: String,
    /// Directories searched for plugins, in order.
    pub path: Vec<PathBuf>,
}

/// One attachment: `(container id, ifname)` in a namespace, with the
/// runtime's capability arguments (e.g. `portMappings`).
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    pub capability_args: Map<String, Value>,
}

impl Attachment {
    pub fn new(container_id: &str, netns_name: &str) -> Attachment {
        Attachment {
            container_id: container_id.into(),
            netns: Some(format!("/run/netns/{netns_name}")),
            ifname: "eth0".into(),
            capability_args: Map::new(),
        }
    }
}

/// A plugin directory holding this build's weave-net and weave-ipam.
pub fn plugin_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("weave-cni-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (name, bin) in [("weave-net", WEAVE_NET), ("weave-ipam", WEAVE_IPAM)] {
        let link = dir.join(name);
        if !link.exists() {
            let _ = std::os::unix::fs::symlink(bin, &link);
        }
    }
    Ok(dir)
}

impl Runtime {
    /// A runtime in `netns` finding our plugins first, then Debian's.
    pub fn new(netns: &str) -> Result<Runtime> {
        Ok(Runtime {
            netns: netns.into(),
            path: vec![plugin_dir()?, REFERENCE_PLUGINS.into()],
        })
    }

    fn find(&self, plugin: &str) -> Result<PathBuf> {
        self.path
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|p| p.exists())
            .with_context(|| format!("plugin {plugin} not found in {:?}", self.path))
    }

    fn cni_path(&self) -> String {
        self.path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Runs `plugin` with raw environment `env` (nothing else of CNI's) and
    /// raw `stdin`.
    pub fn exec_raw(&self, plugin: &str, env: &[(&str, &str)], stdin: &[u8]) -> Result<Invocation> {
        let binary = self.find(plugin)?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.netns])
            .arg(&binary)
            .env_remove("CNI_COMMAND")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("running {plugin}"))?;
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin);
        }
        let out = child.wait_with_output()?;
        Ok(Invocation {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs one plugin of a list for `command` on `attachment` (or none,
    /// for GC and STATUS) with `conf`.
    pub fn exec(
        &self,
        command: &str,
        conf: &Value,
        attachment: Option<&Attachment>,
    ) -> Result<Invocation> {
        let plugin = conf["type"]
            .as_str()
            .context("plugin without type")?
            .to_string();
        let path = self.cni_path();
        let mut env: Vec<(&str, &str)> = vec![("CNI_COMMAND", command), ("CNI_PATH", &path)];
        if let Some(a) = attachment {
            env.push(("CNI_CONTAINERID", &a.container_id));
            env.push(("CNI_IFNAME", &a.ifname));
            if let Some(ns) = &a.netns {
                env.push(("CNI_NETNS", ns));
            }
        }
        self.exec_raw(&plugin, &env, conf.to_string().as_bytes())
    }
}

/// The request configuration of one plugin of `list` (spec section 3).
pub fn derive(
    list: &Value,
    plugin: &Value,
    prev: Option<&Value>,
    attachment: Option<&Attachment>,
) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("cniVersion".into(), list["cniVersion"].clone());
    conf.insert("name".into(), list["name"].clone());
    conf.remove("capabilities");
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    if let (Some(caps), Some(a)) = (plugin["capabilities"].as_object(), attachment) {
        let mut runtime = Map::new();
        for (cap, on) in caps {
            if on == &Value::Bool(true) {
                if let Some(value) = a.capability_args.get(cap) {
                    runtime.insert(cap.clone(), value.clone());
                }
            }
        }
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
    }
    Value::Object(conf)
}

fn plugins(list: &Value) -> Result<Vec<Value>> {
    list["plugins"]
        .as_array()
        .cloned()
        .context("list without plugins")
}

/// A failed step of a list operation: which plugin, and its answer.
#[derive(Debug)]
pub struct ListError {
    pub plugin: String,
    pub invocation: Invocation,
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed: {} {}",
            self.plugin, self.invocation.stdout, self.invocation.stderr
        )
    }
}
impl std::error::Error for ListError {}

impl Runtime {
    /// ADD through the chain; the last plugin's result.
    pub fn add_list(&self, list: &Value, a: &Attachment) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for plugin in plugins(list)? {
            let conf = derive(list, &plugin, prev.as_ref(), Some(a));
            let out = self.exec("ADD", &conf, Some(a))?;
            if !out.success {
                return Err(ListError {
                    plugin: plugin["type"].to_string(),
                    invocation: out,
                }
                .into());
            }
            prev = Some(out.json()?);
        }
        prev.context("empty list")
    }

    /// CHECK through the chain with the ADD result.
    pub fn check_list(&self, list: &Value, a: &Attachment, result: &Value) -> Result<()> {
        for plugin in plugins(list)? {
            let conf = derive(list, &plugin, Some(result), Some(a));
            let out = self.exec("CHECK", &conf, Some(a))?;
            if !out.success {
                return Err(ListError {
                    plugin: plugin["type"].to_string(),
                    invocation: out,
                }
                .into());
            }
        }
        Ok(())
    }

    /// DEL in reverse order, each with the ADD result (if known).
    pub fn del_list(&self, list: &Value, a: &Attachment, result: Option<&Value>) -> Result<()> {
        for plugin in plugins(list)?.iter().rev() {
            let conf = derive(list, plugin, result, Some(a));
            let out = self.exec("DEL", &conf, Some(a))?;
            if !out.success {
                return Err(ListError {
                    plugin: plugin["type"].to_string(),
                    invocation: out,
                }
                .into());
            }
        }
        Ok(())
    }

    /// GC of every plugin with the still-valid attachments; all plugins run
    /// even after a failure, whose errors are returned together.
    pub fn gc_list(&self, list: &Value, valid: &[(&str, &str)]) -> Result<()> {
        let attachments: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        let mut errors = Vec::new();
        for plugin in plugins(list)? {
            let mut conf = derive(list, &plugin, None, None);
            conf["cni.dev/valid-attachments"] = json!(attachments);
            let out = self.exec("GC", &conf, None)?;
            if !out.success {
                errors.push(format!("{}: {}", plugin["type"], out.stdout));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("GC: {}", errors.join("; "))
        }
    }

    /// STATUS of every plugin; the first failure's invocation.
    pub fn status_list(&self, list: &Value) -> Result<Result<(), Invocation>> {
        for plugin in plugins(list)? {
            let conf = derive(list, &plugin, None, None);
            let out = self.exec("STATUS", &conf, None)?;
            if !out.success {
                return Ok(Err(out));
            }
        }
        Ok(Ok(()))
    }
}
