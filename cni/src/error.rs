//! CNI errors: the spec's well-known codes, our own (100+), and the JSON
//! the runtime reads from stdout.

use serde_json::json;

/// An error code as the CNI spec numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: the configuration's version is not one the plugin supports, or the
    /// command does not exist in that version.
    IncompatibleVersion,
    /// 2: a field of the configuration is not supported.
    UnsupportedField,
    /// 3: the container is unknown.
    UnknownContainer,
    /// 4: a required environment variable is missing or invalid.
    InvalidEnvironment,
    /// 5: reading input or an I/O operation failed.
    Io,
    /// 6: the configuration (or another input) could not be decoded.
    Decode,
    /// 7: the configuration is invalid.
    InvalidConfig,
    /// 11: a transient condition (the router cannot be reached); retry later.
    TryAgainLater,
    /// 50: STATUS: the plugin cannot service ADD requests.
    NotAvailable,
    /// 51: STATUS: not available, and existing containers may have limited
    /// connectivity.
    NotAvailableLimited,
    /// 100: a kernel (netlink, sysctl, namespace) operation failed.
    Kernel,
    /// 101: the router answered with an error.
    Router,
    /// 102: the interface `CNI_IFNAME` already exists in the container.
    InterfaceExists,
    /// 103: CHECK found the attachment not as ADD left it.
    CheckFailed,
    /// 104: a delegated plugin failed without a CNI error of its own.
    Delegate,
}

impl Code {
    /// The number the runtime sees.
    pub fn number(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnvironment => 4,
            Code::Io => 5,
            Code::Decode => 6,
            Code::InvalidConfig => 7,
            Code::TryAgainLater => 11,
            Code::NotAvailable => 50,
            Code::NotAvailableLimited => 51,
            Code::Kernel => 100,
            Code::Router => 101,
            Code::InterfaceExists => 102,
            Code::CheckFailed => 103,
            Code::Delegate => 104,
        }
    }
}

/// A failed CNI command: a code, a short message and details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {}: {msg}{}", code_number(.code, *.raw_code), details_suffix(.details))]
pub struct CniError {
    /// The code.
    pub code: Code,
    /// A delegated plugin's own code, passed on as it came.
    pub raw_code: Option<u32>,
    /// A short message.
    pub msg: String,
    /// Longer details (may be empty).
    pub details: String,
}

fn code_number(code: &Code, raw: Option<u32>) -> u32 {
    raw.unwrap_or(code.number())
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

impl CniError {
    /// An error with `code` and `msg`.
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            raw_code: None,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The number the runtime sees.
    pub fn number(&self) -> u32 {
        code_number(&self.code, self.raw_code)
    }

    /// The error as the spec's JSON object, reported in `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        let mut value = json!({
            "cniVersion": cni_version,
            "code": self.number(),
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            value["details"] = json!(self.details);
        }
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_carries_code_message_and_details() {
        let error = CniError::new(Code::TryAgainLater, "router unreachable").with_details("x");
        let value: serde_json::Value = serde_json::from_str(&error.to_json("1.1.0")).unwrap();
        assert_eq!(value["code"], 11);
        assert_eq!(value["cniVersion"], "1.1.0");
        assert_eq!(value["msg"], "router unreachable");
        assert_eq!(value["details"], "x");
        let bare = CniError::new(Code::Decode, "bad");
        assert!(!bare.to_json("1.0.0").contains("details"));
    }
}
