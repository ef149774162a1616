//! Go types as gob describes them: the predefined type ids, the Rust-side
//! description of a Go type ([`GoType`]) used to encode, and the wire type
//! descriptors ([`WireType`]) exchanged before the first value of a type.

use std::fmt;
use std::sync::Arc;

use crate::error::DecodeError;
use crate::wire::{Reader, put_bytes, put_int, put_uint};

/// A gob type id. Negative on the wire when a definition follows.
pub type TypeId = i64;

/// Predefined type id of `bool`.
pub const BOOL_ID: TypeId = 1;
/// Predefined type id of all signed integers.
pub const INT_ID: TypeId = 2;
/// Predefined type id of all unsigned integers.
pub const UINT_ID: TypeId = 3;
/// Predefined type id of all floats.
pub const FLOAT_ID: TypeId = 4;
/// Predefined type id of `[]byte`.
pub const BYTES_ID: TypeId = 5;
/// Predefined type id of `string`.
pub const STRING_ID: TypeId = 6;
/// Predefined type id of all complex numbers.
pub const COMPLEX_ID: TypeId = 7;
/// Predefined type id of interface values.
pub const INTERFACE_ID: TypeId = 8;
/// Predefined type id of the `wireType` descriptor itself.
pub const WIRE_TYPE_ID: TypeId = 16;
/// Predefined type id of `arrayType`.
pub const ARRAY_TYPE_ID: TypeId = 17;
/// Predefined type id of `CommonType`.
pub const COMMON_TYPE_ID: TypeId = 18;
/// Predefined type id of `sliceType`.
pub const SLICE_TYPE_ID: TypeId = 19;
/// Predefined type id of `structType`.
pub const STRUCT_TYPE_ID: TypeId = 20;
/// Predefined type id of `fieldType`.
pub const FIELD_TYPE_ID: TypeId = 21;
/// Predefined type id of `mapType`.
pub const MAP_TYPE_ID: TypeId = 23;
/// The first id handed to user types (Go's encoder starts a fresh process here).
pub const FIRST_USER_ID: TypeId = 65;

/// The Go type a value is encoded as.
///
/// Composite types carry the *name Go writes into the type descriptor*. Go
/// picks that name from where the type was first met: a named type used as a
/// struct field or at top level carries its Go name (`"Ring"`), an unnamed
/// type used as a struct field carries its type string (`"[]mesh.PeerName"`),
/// and a type first met as a map key/element, array element or pointer slice
/// element carries `""`. Types are identified structurally (name plus shape),
/// so the same description used twice gets one type id, as in Go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GoType {
    /// `bool`.
    Bool,
    /// Any signed integer (`int`, `int64`, ...).
    Int,
    /// Any unsigned integer (`uint`, `uint64`, named uints such as `mesh.PeerName`).
    Uint,
    /// `float32`/`float64`.
    Float,
    /// `complex64`/`complex128`.
    Complex,
    /// `string`.
    String,
    /// `[]byte`.
    Bytes,
    /// An interface type (only nil values are supported).
    Interface,
    /// A struct.
    Struct(Arc<StructType>),
    /// A slice.
    Slice(Arc<SliceType>),
    /// A fixed-length array.
    Array(Arc<ArrayType>),
    /// A map.
    Map(Arc<MapType>),
    /// A type with its own marshalling (GobEncoder, BinaryMarshaler,
    /// TextMarshaler): its value is an opaque byte string.
    Opaque(Arc<OpaqueType>),
}

/// A struct type: its descriptor name and exported fields in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StructType {
    /// The name written in the descriptor.
    pub name: String,
    /// The fields, in Go declaration order (which fixes the field numbers).
    pub fields: Vec<Field>,
}

/// One exported struct field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    /// The Go field name; decoders match fields by this name.
    pub name: String,
    /// The field's type.
    pub ty: GoType,
    /// True when the Go field is a pointer (`*T`): a struct value without
    /// this field encodes it as nil (omitted). False: an absent struct- or
    /// array-typed field is sent as its zero value, as Go always sends
    /// non-pointer struct and array fields.
    pub pointer: bool,
}

/// A slice type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SliceType {
    /// The name written in the descriptor.
    pub name: String,
    /// The element type.
    pub elem: GoType,
}

/// An array type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArrayType {
    /// The name written in the descriptor.
    pub name: String,
    /// The element type.
    pub elem: GoType,
    /// The array length.
    pub len: u64,
}

/// A map type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MapType {
    /// The name written in the descriptor.
    pub name: String,
    /// The key type.
    pub key: GoType,
    /// The element type.
    pub elem: GoType,
}

/// Which marshalling interface an opaque type implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpaqueKind {
    /// `GobEncoder`.
    Gob,
    /// `encoding.BinaryMarshaler`.
    Binary,
    /// `encoding.TextMarshaler`.
    Text,
}

/// A self-marshalling type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OpaqueType {
    /// The name written in the descriptor.
    pub name: String,
    /// The interface it implements.
    pub kind: OpaqueKind,
}

impl GoType {
    /// A struct type named `name` with `fields`.
    pub fn structure(name: impl Into<String>, fields: Vec<Field>) -> GoType {
        GoType::Struct(Arc::new(StructType {
            name: name.into(),
            fields,
        }))
    }

    /// A slice type named `name` of `elem`.
    pub fn slice(name: impl Into<String>, elem: GoType) -> GoType {
        GoType::Slice(Arc::new(SliceType {
            name: name.into(),
            elem,
        }))
    }

    /// An array type named `name` of `len` × `elem`.
    pub fn array(name: impl Into<String>, elem: GoType, len: u64) -> GoType {
        GoType::Array(Arc::new(ArrayType {
            name: name.into(),
            elem,
            len,
        }))
    }

    /// A map type named `name` from `key` to `elem`.
    pub fn map(name: impl Into<String>, key: GoType, elem: GoType) -> GoType {
        GoType::Map(Arc::new(MapType {
            name: name.into(),
            key,
            elem,
        }))
    }

    /// The predefined id of a basic type, or `None` for types that need a descriptor.
    pub fn predefined_id(&self) -> Option<TypeId> {
        match self {
            GoType::Bool => Some(BOOL_ID),
            GoType::Int => Some(INT_ID),
            GoType::Uint => Some(UINT_ID),
            GoType::Float => Some(FLOAT_ID),
            GoType::Complex => Some(COMPLEX_ID),
            GoType::String => Some(STRING_ID),
            GoType::Bytes => Some(BYTES_ID),
            GoType::Interface => Some(INTERFACE_ID),
            _ => None,
        }
    }

    /// A short name of the kind, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            GoType::Bool => "bool",
            GoType::Int => "int",
            GoType::Uint => "uint",
            GoType::Float => "float",
            GoType::Complex => "complex",
            GoType::String => "string",
            GoType::Bytes => "[]byte",
            GoType::Interface => "interface",
            GoType::Struct(_) => "struct",
            GoType::Slice(_) => "slice",
            GoType::Array(_) => "array",
            GoType::Map(_) => "map",
            GoType::Opaque(_) => "opaque",
        }
    }
}

impl Field {
    /// A non-pointer field.
    pub fn new(name: impl Into<String>, ty: GoType) -> Field {
        Field {
            name: name.into(),
            ty,
            pointer: false,
        }
    }

    /// A pointer field (`*T`), omitted when absent from the value.
    pub fn pointer(name: impl Into<String>, ty: GoType) -> Field {
        Field {
            name: name.into(),
            ty,
            pointer: true,
        }
    }
}

impl fmt::Display for GoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = |f: &mut fmt::Formatter<'_>, n: &str| {
            if n.is_empty() {
                Ok(())
            } else {
                write!(f, "{n} ")
            }
        };
        match self {
            GoType::Struct(s) => {
                named(f, &s.name)?;
                write!(f, "struct {{")?;
                for (i, fl) in s.fields.iter().enumerate() {
                    if i > 0 {
                        write!(f, ";")?;
                    }
                    write!(f, " {} {}", fl.name, fl.ty)?;
                }
                write!(f, " }}")
            }
            GoType::Slice(s) => {
                named(f, &s.name)?;
                write!(f, "[]{}", s.elem)
            }
            GoType::Array(a) => {
                named(f, &a.name)?;
                write!(f, "[{}]{}", a.len, a.elem)
            }
            GoType::Map(m) => {
                named(f, &m.name)?;
                write!(f, "map[{}]{}", m.key, m.elem)
            }
            GoType::Opaque(o) => write!(f, "{} (opaque)", o.name),
            basic => f.write_str(basic.kind_name()),
        }
    }
}

/// A type descriptor as carried on the wire (Go's `wireType`), with the
/// referenced types given by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireType {
    /// An array type.
    Array {
        /// Descriptor name.
        name: String,
        /// Element type id.
        elem: TypeId,
        /// Length.
        len: i64,
    },
    /// A slice type.
    Slice {
        /// Descriptor name.
        name: String,
        /// Element type id.
        elem: TypeId,
    },
    /// A struct type.
    Struct {
        /// Descriptor name.
        name: String,
        /// Field names and type ids in field-number order.
        fields: Vec<(String, TypeId)>,
    },
    /// A map type.
    Map {
        /// Descriptor name.
        name: String,
        /// Key type id.
        key: TypeId,
        /// Element type id.
        elem: TypeId,
    },
    /// A self-marshalling type.
    Opaque {
        /// Descriptor name.
        name: String,
        /// Which interface.
        kind: OpaqueKind,
    },
}

/// Field number (0-based) of each variant inside Go's `wireType` struct.
const WT_ARRAY: u64 = 0;
const WT_SLICE: u64 = 1;
const WT_STRUCT: u64 = 2;
const WT_MAP: u64 = 3;
const WT_GOB: u64 = 4;
const WT_BINARY: u64 = 5;
const WT_TEXT: u64 = 6;

/// Writes a struct field header: the delta from the previous field number.
fn put_field(buf: &mut Vec<u8>, last: &mut i64, field: i64) {
    put_uint(buf, (field - *last) as u64);
    *last = field;
}

/// Writes Go's `CommonType{Name, Id}` as a struct (name omitted when empty).
fn put_common(buf: &mut Vec<u8>, name: &str, id: TypeId) {
    let mut last = -1;
    if !name.is_empty() {
        put_field(buf, &mut last, 0);
        put_bytes(buf, name.as_bytes());
    }
    if id != 0 {
        put_field(buf, &mut last, 1);
        put_int(buf, id);
    }
    buf.push(0);
}

impl WireType {
    /// The descriptor name.
    pub fn name(&self) -> &str {
        match self {
            WireType::Array { name, .. }
            | WireType::Slice { name, .. }
            | WireType::Struct { name, .. }
            | WireType::Map { name, .. }
            | WireType::Opaque { name, .. } => name,
        }
    }

    /// Appends the encoding of this descriptor (the body of a type-definition
    /// message, after the negative id) for a type with id `id`.
    pub fn encode(&self, id: TypeId, buf: &mut Vec<u8>) {
        // Each inner struct starts with its CommonType (field 0) then its own
        // fields; zero values are omitted as for any gob struct.
        let mut last = -1;
        match self {
            WireType::Array { name, elem, len } => {
                put_field(buf, &mut last, WT_ARRAY as i64);
                let mut l = -1;
                put_field(buf, &mut l, 0);
                put_common(buf, name, id);
                if *elem != 0 {
                    put_field(buf, &mut l, 1);
                    put_int(buf, *elem);
                }
                if *len != 0 {
                    put_field(buf, &mut l, 2);
                    put_int(buf, *len);
                }
                buf.push(0);
            }
            WireType::Slice { name, elem } => {
                put_field(buf, &mut last, WT_SLICE as i64);
                let mut l = -1;
                put_field(buf, &mut l, 0);
                put_common(buf, name, id);
                if *elem != 0 {
                    put_field(buf, &mut l, 1);
                    put_int(buf, *elem);
                }
                buf.push(0);
            }
            WireType::Struct { name, fields } => {
                put_field(buf, &mut last, WT_STRUCT as i64);
                let mut l = -1;
                put_field(buf, &mut l, 0);
                put_common(buf, name, id);
                if !fields.is_empty() {
                    put_field(buf, &mut l, 1);
                    put_uint(buf, fields.len() as u64);
                    for (fname, fid) in fields {
                        let mut fl = -1;
                        if !fname.is_empty() {
                            put_field(buf, &mut fl, 0);
                            put_bytes(buf, fname.as_bytes());
                        }
                        if *fid != 0 {
                            put_field(buf, &mut fl, 1);
                            put_int(buf, *fid);
                        }
                        buf.push(0);
                    }
                }
                buf.push(0);
            }
            WireType::Map { name, key, elem } => {
                put_field(buf, &mut last, WT_MAP as i64);
                let mut l = -1;
                put_field(buf, &mut l, 0);
                put_common(buf, name, id);
                if *key != 0 {
                    put_field(buf, &mut l, 1);
                    put_int(buf, *key);
                }
                if *elem != 0 {
                    put_field(buf, &mut l, 2);
                    put_int(buf, *elem);
                }
                buf.push(0);
            }
            WireType::Opaque { name, kind } => {
                let f = match kind {
                    OpaqueKind::Gob => WT_GOB,
                    OpaqueKind::Binary => WT_BINARY,
                    OpaqueKind::Text => WT_TEXT,
                };
                put_field(buf, &mut last, f as i64);
                let mut l = -1;
                put_field(buf, &mut l, 0);
                put_common(buf, name, id);
                buf.push(0);
            }
        }
        buf.push(0);
    }

    /// Reads a descriptor (Go's `wireType` struct) from `r`. Unknown fields
    /// are rejected: the descriptor shapes are fixed by the gob format.
    pub fn decode(r: &mut Reader<'_>) -> Result<WireType, DecodeError> {
        let mut found: Option<WireType> = None;
        let mut field: i64 = -1;
        loop {
            let delta = r.uint("wireType field")?;
            if delta == 0 {
                break;
            }
            field = field_after(field, delta, 7)?;
            let wt = match field as u64 {
                WT_ARRAY => {
                    let mut name = String::new();
                    let (mut elem, mut len) = (0, 0);
                    read_struct(r, 3, |r, f| {
                        match f {
                            0 => name = read_common(r)?.0,
                            1 => elem = r.int("arrayType.Elem")?,
                            _ => len = r.int("arrayType.Len")?,
                        }
                        Ok(())
                    })?;
                    WireType::Array { name, elem, len }
                }
                WT_SLICE => {
                    let mut name = String::new();
                    let mut elem = 0;
                    read_struct(r, 2, |r, f| {
                        match f {
                            0 => name = read_common(r)?.0,
                            _ => elem = r.int("sliceType.Elem")?,
                        }
                        Ok(())
                    })?;
                    WireType::Slice { name, elem }
                }
                WT_STRUCT => {
                    let mut name = String::new();
                    let mut fields = Vec::new();
                    read_struct(r, 2, |r, f| {
                        match f {
                            0 => name = read_common(r)?.0,
                            _ => {
                                // Each fieldType takes at least its terminator byte.
                                let n = r.count(1, "structType.Field")?;
                                fields = Vec::with_capacity(n);
                                for _ in 0..n {
                                    let mut fname = String::new();
                                    let mut fid = 0;
                                    read_struct(r, 2, |r, f| {
                                        match f {
                                            0 => fname = read_string(r, "fieldType.Name")?,
                                            _ => fid = r.int("fieldType.Id")?,
                                        }
                                        Ok(())
                                    })?;
                                    fields.push((fname, fid));
                                }
                            }
                        }
                        Ok(())
                    })?;
                    WireType::Struct { name, fields }
                }
                WT_MAP => {
                    let mut name = String::new();
                    let (mut key, mut elem) = (0, 0);
                    read_struct(r, 3, |r, f| {
                        match f {
                            0 => name = read_common(r)?.0,
                            1 => key = r.int("mapType.Key")?,
                            _ => elem = r.int("mapType.Elem")?,
                        }
                        Ok(())
                    })?;
                    WireType::Map { name, key, elem }
                }
                other => {
                    let kind = match other {
                        WT_GOB => OpaqueKind::Gob,
                        WT_BINARY => OpaqueKind::Binary,
                        _ => OpaqueKind::Text,
                    };
                    let mut name = String::new();
                    read_struct(r, 1, |r, _| {
                        name = read_common(r)?.0;
                        Ok(())
                    })?;
                    WireType::Opaque { name, kind }
                }
            };
            if found.is_some() {
                return Err(DecodeError::BadTypeDescriptor("more than one kind"));
            }
            found = Some(wt);
        }
        found.ok_or(DecodeError::BadTypeDescriptor("no kind"))
    }
}

/// Advances a field number by a delta, checking it stays below `fields`.
pub(crate) fn field_after(field: i64, delta: u64, fields: usize) -> Result<i64, DecodeError> {
    let next = i128::from(field) + i128::from(delta);
    if delta >= 1 && next >= 0 && next < fields as i128 {
        Ok(next as i64)
    } else {
        Err(DecodeError::FieldOutOfRange {
            field: u64::try_from(next).unwrap_or(u64::MAX),
            fields,
        })
    }
}

/// Reads a struct whose fields are handled by `each(reader, field_number)`.
fn read_struct(
    r: &mut Reader<'_>,
    fields: usize,
    mut each: impl FnMut(&mut Reader<'_>, u64) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut field: i64 = -1;
    loop {
        let delta = r.uint("descriptor field")?;
        if delta == 0 {
            return Ok(());
        }
        field = field_after(field, delta, fields)?;
        each(r, field as u64)?;
    }
}

/// Reads a `CommonType{Name, Id}`.
fn read_common(r: &mut Reader<'_>) -> Result<(String, TypeId), DecodeError> {
    let mut name = String::new();
    let mut id = 0;
    read_struct(r, 2, |r, f| {
        match f {
            0 => name = read_string(r, "CommonType.Name")?,
            _ => id = r.int("CommonType.Id")?,
        }
        Ok(())
    })?;
    Ok((name, id))
}

fn read_string(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    let b = r.bytes(what)?;
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip() {
        let cases = [
            WireType::Struct {
                name: "Range".into(),
                fields: vec![("Start".into(), UINT_ID), ("End".into(), UINT_ID)],
            },
            WireType::Struct {
                name: String::new(),
                fields: vec![],
            },
            WireType::Slice {
                name: "[]mesh.PeerName".into(),
                elem: UINT_ID,
            },
            WireType::Map {
                name: String::new(),
                key: STRING_ID,
                elem: STRING_ID,
            },
            WireType::Array {
                name: String::new(),
                elem: UINT_ID,
                len: 6,
            },
            WireType::Opaque {
                name: "Time".into(),
                kind: OpaqueKind::Binary,
            },
        ];
        for wt in cases {
            let mut buf = Vec::new();
            wt.encode(70, &mut buf);
            let mut r = Reader::new(&buf);
            assert_eq!(WireType::decode(&mut r), Ok(wt));
            assert!(r.is_empty());
        }
    }

    #[test]
    fn field_numbers_are_bounded() {
        assert_eq!(field_after(-1, 1, 2), Ok(0));
        assert_eq!(field_after(0, 1, 2), Ok(1));
        assert!(field_after(1, 1, 2).is_err());
        assert!(field_after(-1, u64::MAX, 2).is_err());
        assert!(field_after(0, 0, 2).is_err());
    }
}
