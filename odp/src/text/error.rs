//! Errors of the text parser.

use thiserror::Error;

/// Why a flow or action string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Something else was found where `what` was expected.
    #[error("syntax error at byte {offset} ({at:?}): expected {what}")]
    Syntax {
        /// What the parser expected.
        what: &'static str,
        /// The text from the error on (at most 40 characters).
        at: String,
        /// Byte offset of the error.
        offset: usize,
    },
    /// A known construct this crate does not parse (e.g. Geneve options).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A port name that the lookup did not know.
    #[error("unknown port {0:?}")]
    UnknownPort(String),
    /// A malformed `ufid:` value.
    #[error("bad ufid {0:?}")]
    BadUfid(String),
    /// `encap`, `clone` or `sample` nested deeper than [`super::MAX_NESTING`].
    #[error("nested too deeply")]
    TooDeep,
}
