//! Running a delegated IPAM plugin (an `ipam.type` other than
//! `weave-ipam`) as the spec's section 4 says: found in `CNI_PATH`, given
//! our environment with its command, and our stdin.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::env::CniEnv;
use crate::error::{CniError, Code};

/// Finds `plugin` in `CNI_PATH`.
pub fn find(plugin: &str, env: &CniEnv) -> Result<PathBuf, CniError> {
    if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("ipam.type {plugin:?} is not a plugin name"),
        ));
    }
    let path = env.path.as_deref().ok_or_else(|| {
        CniError::new(
            Code::InvalidEnvironment,
            format!("required env variables [CNI_PATH] missing (to run ipam plugin {plugin})"),
        )
    })?;
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| PathBuf::from(dir).join(plugin))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                format!("ipam plugin {plugin:?} not found in CNI_PATH {path}"),
            )
        })
}

/// Runs `plugin` with `command` and `stdin`; returns its stdout on success,
/// or its error.
pub fn run(plugin: &str, command: &str, env: &CniEnv, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let binary = find(plugin, env)?;
    let mut child = Command::new(&binary)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::new(Code::Io, format!("starting {}", binary.display()))
                .with_details(e.to_string())
        })?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading is judged by its answer.
        let _ = input.write_all(stdin);
    }
    let output = child.wait_with_output().map_err(|e| {
        CniError::new(Code::Io, format!("running {}", binary.display())).with_details(e.to_string())
    })?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(delegate_error(plugin, &output.stdout, output.status.code()))
}

/// The error a failed delegate printed, passed on with its code.
fn delegate_error(plugin: &str, stdout: &[u8], status: Option<i32>) -> CniError {
    if let Ok(value) = serde_json::from_slice::<Value>(stdout) {
        if let Some(code) = value
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
        {
            let text = |key: &str| {
                value
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            return CniError {
                code: Code::Delegate,
                raw_code: Some(code),
                msg: format!("{plugin}: {}", text("msg")),
                details: text("details"),
            };
        }
    }
    CniError::new(
        Code::Delegate,
        format!("ipam plugin {plugin} failed (exit status {status:?})"),
    )
    .with_details(String::from_utf8_lossy(stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegate_errors_keep_their_code() {
        let e = delegate_error(
            "host-local",
            br#"{"code":11,"msg":"busy","details":"d"}"#,
            Some(1),
        );
        assert_eq!(e.number(), 11);
        assert!(e.msg.contains("busy"));
        let e = delegate_error("x", b"garbage", Some(2));
        assert_eq!(e.number(), Code::Delegate.number());
    }

    #[test]
    fn plugin_names_are_not_paths() {
        let env = CniEnv::from_lookup(|k| match k {
            "CNI_COMMAND" => Some("GC".into()),
            "CNI_PATH" => Some("/nonexistent".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(find("../x", &env).unwrap_err().code, Code::InvalidConfig);
        assert_eq!(
            find("host-local", &env).unwrap_err().code,
            Code::InvalidConfig
        );
    }
}
