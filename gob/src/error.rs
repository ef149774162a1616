//! Typed errors of the gob layer.

use thiserror::Error;

/// An error found while reading gob bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended in the middle of an item.
    #[error("gob: unexpected end of input while reading {0}")]
    UnexpectedEof(&'static str),
    /// An unsigned integer announced more than 8 bytes.
    #[error("gob: unsigned integer with {0} bytes (at most 8 allowed)")]
    BadUint(usize),
    /// A message announced a byte count larger than the configured limit.
    #[error("gob: message of {len} bytes exceeds the limit of {limit}")]
    MessageTooBig {
        /// The announced length.
        len: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A length (string, slice, map, array) is larger than the bytes left.
    #[error("gob: length {len} exceeds the {left} bytes left in the message")]
    LengthTooBig {
        /// The announced length.
        len: u64,
        /// The bytes left.
        left: usize,
    },
    /// A type definition reused an id that was already defined, or a predefined one.
    #[error("gob: duplicate or reserved type id {0} defined")]
    DuplicateType(i64),
    /// A value or a type refers to an id nobody defined.
    #[error("gob: unknown type id {0}")]
    UnknownType(i64),
    /// A type descriptor is malformed.
    #[error("gob: malformed type descriptor: {0}")]
    BadTypeDescriptor(&'static str),
    /// A type-definition message had bytes after the descriptor.
    #[error("gob: extra data after a type definition")]
    ExtraDataAfterType,
    /// A type definition was not followed by a value.
    #[error("gob: input ended after type definitions, before a value")]
    MissingValue,
    /// A struct field number points past the wire type's fields.
    #[error("gob: field number {field} out of range for a struct of {fields} fields")]
    FieldOutOfRange {
        /// The field number reached.
        field: u64,
        /// The number of fields of the wire struct.
        fields: usize,
    },
    /// A non-struct value at top level did not start with a zero delta.
    #[error("gob: non-zero delta {0} for a top-level non-struct value")]
    BadSingletonDelta(u64),
    /// An array arrived with a length other than its type's.
    #[error("gob: array of length {got} where the type says {want}")]
    ArrayLength {
        /// The received length.
        got: u64,
        /// The length from the type.
        want: u64,
    },
    /// A string was not valid UTF-8.
    #[error("gob: string is not valid UTF-8")]
    InvalidUtf8,
    /// Values nest deeper than the configured limit.
    #[error("gob: nesting deeper than {0} levels")]
    TooDeep(usize),
    /// One top-level value holds more values than the configured limit.
    #[error("gob: more than {0} values in one top-level value")]
    TooManyValues(usize),
    /// A type rebuilt from descriptors has more nodes than the configured limit.
    #[error("gob: type description larger than {0} nodes")]
    TypeTooLarge(usize),
    /// Something this implementation does not decode (non-nil interface values).
    #[error("gob: unsupported: {0}")]
    Unsupported(&'static str),
    /// The decoded value does not fit the Rust type asked for.
    #[error("gob: {0}")]
    Value(#[from] ValueError),
    /// A higher-level framing around gob values is malformed (e.g. an empty IPAM message).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// A dynamic [`crate::Value`] that does not fit a typed Rust value.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// The value has another kind than the Rust type expects.
    #[error("type mismatch: expected {expected}, found {found}")]
    Mismatch {
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// A number does not fit the Rust (and Go) field type.
    #[error("value {value} out of range for {ty}")]
    OutOfRange {
        /// The Go type name.
        ty: &'static str,
        /// The received value, printed.
        value: String,
    },
    /// An error inside a named struct field.
    #[error("field {field}: {source}")]
    InField {
        /// The field name.
        field: String,
        /// The inner error.
        source: Box<ValueError>,
    },
}

/// An error found while writing gob bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// A value does not match the Go type it is encoded as.
    #[error("gob encode: value of kind {found} where the type wants {expected}")]
    Mismatch {
        /// The kind the type wants.
        expected: &'static str,
        /// The kind found.
        found: &'static str,
    },
    /// An array value has another length than its type.
    #[error("gob encode: array of length {got} where the type says {want}")]
    ArrayLength {
        /// The value's length.
        got: usize,
        /// The type's length.
        want: u64,
    },
    /// Types nest deeper than the limit (or are infinitely recursive).
    #[error("gob encode: nesting deeper than {0} levels")]
    TooDeep(usize),
    /// Something Go cannot encode either (e.g. a zero value of an opaque type).
    #[error("gob encode: unsupported: {0}")]
    Unsupported(&'static str),
}
