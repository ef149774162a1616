//! The CNI parameters in the environment.

use crate::config::valid_ifname;
use crate::error::{CniError, Code};

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// ADD.
    Add,
    /// DEL.
    Del,
    /// CHECK.
    Check,
    /// STATUS.
    Status,
    /// GC.
    Gc,
    /// VERSION.
    Version,
}

/// The parameters of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`, checked against the spec's alphabet.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_IFNAME`, checked to be an interface name.
    pub ifname: Option<String>,
    /// `CNI_ARGS`.
    pub args: Option<String>,
    /// `CNI_PATH`.
    pub path: Option<String>,
}

/// Whether `id` is a container id as the spec allows them: an ASCII letter
/// or digit, then letters, digits, `_`, `.` and `-`.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl CniEnv {
    /// Reads the parameters through `get` (normally `std::env::var`);
    /// missing, empty and malformed variables are error 4, naming them all.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
        let get = |key: &str| get(key).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some("VERSION") => Command::Version,
            Some(other) => {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    format!("CNI_COMMAND {other:?} is not a CNI command"),
                ));
            }
            None => {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    "required env variables [CNI_COMMAND] missing",
                ));
            }
        };
        let env = CniEnv {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        };
        let required: &[&str] = match command {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Status | Command::Gc | Command::Version => &[],
        };
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|key| match *key {
                "CNI_CONTAINERID" => env.container_id.is_none(),
                "CNI_NETNS" => env.netns.is_none(),
                _ => env.ifname.is_none(),
            })
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("required env variables [{}] missing", missing.join(",")),
            ));
        }
        let mut invalid = Vec::new();
        if env
            .container_id
            .as_deref()
            .is_some_and(|id| !valid_container_id(id))
        {
            invalid.push("CNI_CONTAINERID");
        }
        if env
            .ifname
            .as_deref()
            .is_some_and(|name| !valid_ifname(name))
        {
            invalid.push("CNI_IFNAME");
        }
        if !invalid.is_empty() {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("invalid env variables [{}]", invalid.join(",")),
            ));
        }
        Ok(env)
    }

    /// Reads the parameters from the process environment.
    pub fn from_process() -> Result<CniEnv, CniError> {
        CniEnv::from_lookup(|key| std::env::var(key).ok())
    }

    /// The container id (present for ADD, CHECK and DEL).
    pub fn id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }

    /// The interface name (present for ADD, CHECK and DEL).
    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_lookup(move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    #[test]
    fn missing_variables_are_named() {
        let e = env(&[]).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnvironment);
        assert!(e.msg.contains("CNI_COMMAND"));
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID,CNI_NETNS"), "{}", e.msg);
        let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1")]).unwrap_err();
        assert!(e.msg.contains("[CNI_IFNAME]"), "{}", e.msg);
        assert!(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0")
            ])
            .is_ok()
        );
        assert!(env(&[("CNI_COMMAND", "GC")]).is_ok());
        assert_eq!(
            env(&[("CNI_COMMAND", "add")]).unwrap_err().code,
            Code::InvalidEnvironment
        );
    }

    #[test]
    fn ids_and_names_are_checked() {
        let base = [("CNI_COMMAND", "DEL"), ("CNI_IFNAME", "eth0")];
        for bad in ["-x", "a/b", "a b", "../x", "a?b"] {
            let mut pairs = base.to_vec();
            pairs.push(("CNI_CONTAINERID", bad));
            let e = env(&pairs).unwrap_err();
            assert!(e.msg.contains("CNI_CONTAINERID"), "{bad}");
        }
        assert!(valid_container_id("abc-1.2_3"));
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "a/b"),
        ])
        .unwrap_err();
        assert!(e.msg.contains("CNI_IFNAME"));
    }
}
