//! Transport and kernel errors.

use thiserror::Error;

use crate::wire::validate::FlowError;
use crate::wire::{DecodeError, EncodeError};

fn ext(m: &Option<String>) -> String {
    match m {
        Some(m) => format!(": {m}"),
        None => String::new(),
    }
}

/// Anything that can go wrong talking to the kernel datapath.
///
/// Kernel errors carry the errno as a variant and the kernel's extended-ack
/// message (`NLMSGERR_ATTR_MSG`) when it sent one.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The generic-netlink family is not registered: for the OVS families this
    /// means the `openvswitch` kernel module is not loaded.
    #[error(
        "generic netlink family {family:?} is not available (is the openvswitch module loaded?)"
    )]
    FamilyNotFound {
        /// The family name looked up.
        family: String,
    },
    /// `EEXIST`.
    #[error("already exists{}", ext(.message))]
    Exists {
        /// Extended-ack text.
        message: Option<String>,
    },
    /// `ENOENT`.
    #[error("not found{}", ext(.message))]
    NotFound {
        /// Extended-ack text.
        message: Option<String>,
    },
    /// `EINVAL`: the kernel refused the request (the reason is in its log).
    #[error("invalid request{}", ext(.message))]
    Invalid {
        /// Extended-ack text.
        message: Option<String>,
    },
    /// `EOPNOTSUPP`: e.g. an unknown datapath feature bit.
    #[error("operation not supported{}", ext(.message))]
    NotSupported {
        /// Extended-ack text.
        message: Option<String>,
    },
    /// `ENODEV`: no such network device or datapath.
    #[error("no such device{}", ext(.message))]
    NoDevice {
        /// Extended-ack text.
        message: Option<String>,
    },
    /// `EAFNOSUPPORT`: e.g. a tunnel type the kernel was built without.
    #[error("address family not supported{}", ext(.message))]
    AfNotSupported {
        /// Extended-ack text.
        message: Option<String>,
    },
    /// `ENOBUFS` returned by the kernel for a request.
    #[error("no buffer space{}", ext(.message))]
    NoBufs {
        /// Extended-ack text.
        message: Option<String>,
    },
    /// Any other errno.
    #[error("kernel error {errno} ({}){}", std::io::Error::from_raw_os_error(*.errno), ext(.message))]
    Kernel {
        /// The positive errno.
        errno: i32,
        /// Extended-ack text.
        message: Option<String>,
    },
    /// The socket's receive queue overflowed and replies were lost; whether
    /// the affected requests took effect is unknown.
    #[error("netlink receive queue overrun: replies were lost")]
    Overrun,
    /// A datagram was larger than the receive buffer.
    #[error("netlink message of {0} bytes truncated")]
    Truncated(usize),
    /// A socket call failed.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// A reply could not be decoded.
    #[error("decoding a reply: {0}")]
    Decode(#[from] DecodeError),
    /// A request could not be encoded.
    #[error("encoding a request: {0}")]
    Encode(#[from] EncodeError),
    /// A flow was refused before sending because the kernel would refuse it.
    #[error("invalid flow: {0}")]
    Flow(#[from] FlowError),
    /// An EXECUTE packet shorter than an Ethernet header (the kernel needs 14 bytes).
    #[error("packet of {0} bytes is shorter than an Ethernet header")]
    PacketTooShort(usize),
    /// An async socket was opened outside a tokio runtime.
    #[error("the async API needs a tokio runtime with I/O enabled")]
    NoRuntime,
    /// The kernel's answer did not have the expected shape.
    #[error("unexpected reply: {0}")]
    Protocol(&'static str),
}

impl Error {
    /// Maps a positive errno and extended-ack text to a variant.
    pub fn from_errno(errno: i32, message: Option<String>) -> Self {
        match errno {
            libc::EEXIST => Error::Exists { message },
            libc::ENOENT => Error::NotFound { message },
            libc::EINVAL => Error::Invalid { message },
            libc::EOPNOTSUPP => Error::NotSupported { message },
            libc::ENODEV => Error::NoDevice { message },
            libc::EAFNOSUPPORT => Error::AfNotSupported { message },
            libc::ENOBUFS => Error::NoBufs { message },
            errno => Error::Kernel { errno, message },
        }
    }

    /// The errno of a kernel error.
    pub fn errno(&self) -> Option<i32> {
        Some(match self {
            Error::Exists { .. } => libc::EEXIST,
            Error::NotFound { .. } => libc::ENOENT,
            Error::Invalid { .. } => libc::EINVAL,
            Error::NotSupported { .. } => libc::EOPNOTSUPP,
            Error::NoDevice { .. } => libc::ENODEV,
            Error::AfNotSupported { .. } => libc::EAFNOSUPPORT,
            Error::NoBufs { .. } => libc::ENOBUFS,
            Error::Kernel { errno, .. } => *errno,
            _ => return None,
        })
    }

    /// The kernel's extended-ack message, if any.
    pub fn ext_ack(&self) -> Option<&str> {
        match self {
            Error::Exists { message }
            | Error::NotFound { message }
            | Error::Invalid { message }
            | Error::NotSupported { message }
            | Error::NoDevice { message }
            | Error::AfNotSupported { message }
            | Error::NoBufs { message }
            | Error::Kernel { message, .. } => message.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_round_trips() {
        for e in [
            libc::EEXIST,
            libc::ENOENT,
            libc::EINVAL,
            libc::EOPNOTSUPP,
            libc::ENODEV,
            libc::EAFNOSUPPORT,
            libc::ENOBUFS,
            libc::EPERM,
        ] {
            assert_eq!(Error::from_errno(e, None).errno(), Some(e));
        }
        assert!(matches!(
            Error::from_errno(libc::EEXIST, None),
            Error::Exists { .. }
        ));
        let e = Error::from_errno(libc::EINVAL, Some("bad key".into()));
        assert_eq!(e.ext_ack(), Some("bad key"));
        assert_eq!(e.to_string(), "invalid request: bad key");
    }
}
