//! The two plugins' commands: reading the invocation, dispatching, and
//! printing the result or the error the way libcni reads them.

use std::io::Read;

use serde_json::{Value, json};

use crate::attach;
use crate::config::NetConf;
use crate::delegate;
use crate::env::{CniEnv, Command};
use crate::error::{CniError, Code};
use crate::ipam;
use crate::netns::Netns;
use crate::result::CniResult;
use crate::router::Router;
use crate::version::{SUPPORTED, Version};

/// Which plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// `weave-net`, the interface plugin.
    Net,
    /// `weave-ipam`, the IPAM plugin.
    Ipam,
}

/// Runs one command; `Ok(Some(json))` is printed on stdout.
pub fn run(
    plugin: Plugin,
    env: &CniEnv,
    stdin: &[u8],
    router: &Router,
) -> Result<Option<String>, CniError> {
    if env.command == Command::Version {
        return Ok(Some(version_answer(stdin)));
    }
    let conf = NetConf::parse(stdin)?;
    let version = conf.version;
    let name = |c: Command| match c {
        Command::Check => "CHECK",
        Command::Status => "STATUS",
        _ => "GC",
    };
    match env.command {
        Command::Check if !version.has_check() => {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "config version {version} does not allow {}",
                    name(env.command)
                ),
            ));
        }
        Command::Status | Command::Gc if !version.has_status_and_gc() => {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "config version {version} does not allow {}",
                    name(env.command)
                ),
            ));
        }
        _ => {}
    }
    let print = |result: CniResult| Some(result.to_value(version).to_string());
    match (plugin, env.command) {
        (_, Command::Version) => Ok(Some(version_answer(stdin))),
        (Plugin::Ipam, Command::Add) => ipam::add(router, &conf, env.id()).map(print),
        (Plugin::Ipam, Command::Del) => ipam::del(router, &conf, env.id()).map(|()| None),
        (Plugin::Ipam, Command::Check) => {
            let prev = require_prev(&conf)?;
            ipam::check(router, &conf, env.id(), &ipam::v4_addresses(prev, None)).map(|()| None)
        }
        (_, Command::Status) => status(&conf, env, stdin, router).map(|()| None),
        (_, Command::Gc) => {
            if conf.ipam.is_weave() || plugin == Plugin::Ipam {
                ipam::gc(router, &conf).map(|()| None)
            } else {
                delegate::run(&conf.ipam.plugin, "GC", env, stdin).map(|_| None)
            }
        }
        (Plugin::Net, Command::Add) => net_add(&conf, env, stdin, router).map(print),
        (Plugin::Net, Command::Del) => net_del(&conf, env, stdin, router).map(|()| None),
        (Plugin::Net, Command::Check) => {
            let prev = require_prev(&conf)?;
            let addrs = attach::check(&conf, env, prev)?;
            if conf.ipam.is_weave() {
                ipam::check(router, &conf, env.id(), &addrs)?;
            } else {
                delegate::run(&conf.ipam.plugin, "CHECK", env, stdin)?;
            }
            Ok(None)
        }
    }
}

fn require_prev(conf: &NetConf) -> Result<&CniResult, CniError> {
    conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "CHECK needs prevResult in the configuration",
        )
    })
}

fn status(conf: &NetConf, env: &CniEnv, stdin: &[u8], router: &Router) -> Result<(), CniError> {
    if conf.ipam.is_weave() {
        router.ipam_ready()
    } else {
        delegate::run(&conf.ipam.plugin, "STATUS", env, stdin).map(|_| ())
    }
}

fn net_add(
    conf: &NetConf,
    env: &CniEnv,
    stdin: &[u8],
    router: &Router,
) -> Result<CniResult, CniError> {
    let netns = Netns::open(env.netns.as_deref().unwrap_or_default()).map_err(|e| {
        CniError::new(Code::Io, "cannot open CNI_NETNS").with_details(e.to_string())
    })?;
    if netns.is_current() {
        return Err(CniError::new(
            Code::InvalidEnvironment,
            "invalid env variables [CNI_NETNS]: it is the plugin's own (host) network namespace",
        ));
    }
    // Before allocating anything: the spec's must-fail case.
    if attach::interface_exists(&netns, env.ifname())? {
        return Err(CniError::new(
            Code::InterfaceExists,
            format!(
                "interface {} already exists in {}",
                env.ifname(),
                netns.path()
            ),
        ));
    }
    drop(netns);
    attach::expose_bridge_first(router, conf)?;
    let ipam_result = if conf.ipam.is_weave() {
        ipam::add(router, conf, env.id())?
    } else {
        let out = delegate::run(&conf.ipam.plugin, "ADD", env, stdin)?;
        CniResult::from_slice(&out).map_err(|e| {
            CniError::new(
                Code::Decode,
                format!("ipam plugin {}'s result", conf.ipam.plugin),
            )
            .with_details(e.to_string())
        })?
    };
    let release = || {
        let outcome = if conf.ipam.is_weave() {
            router.release(env.id())
        } else {
            delegate::run(&conf.ipam.plugin, "DEL", env, stdin).map(|_| ())
        };
        if let Err(e) = outcome {
            eprintln!("weave-cni: releasing the address after a failed ADD: {e}");
        }
    };
    attach::add(router, conf, env, ipam_result, &release)
}

fn net_del(conf: &NetConf, env: &CniEnv, stdin: &[u8], router: &Router) -> Result<(), CniError> {
    // The interface first; if that fails we still free the address, then
    // report the failure so the runtime retries.
    let removed = attach::remove(env);
    if let Err(e) = &removed {
        eprintln!("weave-cni: removing {}: {e}", env.ifname());
    }
    router.unregister_container(env.id());
    if conf.ipam.is_weave() {
        ipam::release_or_defer(router, conf, env.id())?;
    } else {
        delegate::run(&conf.ipam.plugin, "DEL", env, stdin)?;
    }
    removed
}

/// VERSION's answer: the requested version echoed (1.1.0 if none) and the
/// versions we speak.
pub fn version_answer(stdin: &[u8]) -> String {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| Version::LATEST.as_str().to_string());
    json!({
        "cniVersion": asked,
        "supportedVersions": SUPPORTED.map(Version::as_str),
    })
    .to_string()
}

/// The whole invocation as a binary runs it: reads the environment and
/// stdin, runs the command, prints, and returns the exit status.
pub fn invoke(plugin: Plugin) -> i32 {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = crate::config::sniff_version(&stdin).unwrap_or(Version::LATEST);
    let outcome = match read {
        Err(e) => Err(
            CniError::new(Code::Io, "reading the configuration from stdin")
                .with_details(e.to_string()),
        ),
        Ok(_) => CniEnv::from_process().and_then(|env| {
            let router = Router::from_env();
            // A bug must still answer in the protocol, not with a panic.
            std::panic::catch_unwind(|| run(plugin, &env, &stdin, &router)).unwrap_or_else(|_| {
                Err(CniError::new(
                    Code::Io,
                    "internal error (the plugin panicked)",
                ))
            })
        }),
    };
    match outcome {
        Ok(Some(text)) => {
            println!("{text}");
            0
        }
        Ok(None) => 0,
        Err(error) => {
            println!("{}", error.to_json(version.as_str()));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_echoes_the_request() {
        let v: Value = serde_json::from_str(&version_answer(br#"{"cniVersion":"0.4.0"}"#)).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
        let v: Value = serde_json::from_str(&version_answer(b"")).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn commands_missing_from_old_versions_are_refused() {
        let router = Router::new("127.0.0.1:1");
        let env = |cmd: &str| {
            let cmd = cmd.to_string();
            CniEnv::from_lookup(move |k| match k {
                "CNI_COMMAND" => Some(cmd.clone()),
                "CNI_CONTAINERID" => Some("c1".into()),
                "CNI_NETNS" => Some("/nonexistent".into()),
                "CNI_IFNAME" => Some("eth0".into()),
                _ => None,
            })
            .unwrap()
        };
        let old = br#"{"cniVersion":"0.3.1","name":"n","type":"weave-net"}"#;
        let e = run(Plugin::Net, &env("CHECK"), old, &router).unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
        let v100 = br#"{"cniVersion":"1.0.0","name":"n","type":"weave-net"}"#;
        for cmd in ["STATUS", "GC"] {
            let e = run(Plugin::Ipam, &env(cmd), v100, &router).unwrap_err();
            assert_eq!(e.code, Code::IncompatibleVersion, "{cmd}");
        }
        let v110 = br#"{"cniVersion":"1.1.0","name":"n","type":"weave-net"}"#;
        let e = run(Plugin::Net, &env("STATUS"), v110, &router).unwrap_err();
        assert_eq!(e.code, Code::NotAvailable);
        let e = run(Plugin::Net, &env("GC"), v110, &router).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig, "GC without valid-attachments");
        let e = run(Plugin::Net, &env("CHECK"), v110, &router).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig, "CHECK without prevResult");
    }
}
