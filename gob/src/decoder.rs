//! [`Decoder`]: reads a gob stream from a byte slice into [`Value`]s or
//! typed values, with every length, depth and count bounded.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::DecodeError;
use crate::typed::Gob;
use crate::types::{
    BOOL_ID, BYTES_ID, COMPLEX_ID, FIRST_USER_ID, FLOAT_ID, Field, GoType, INT_ID, INTERFACE_ID,
    OpaqueType, STRING_ID, StructType, TypeId, UINT_ID, WireType, field_after,
};
use crate::value::{StructValue, Value};
use crate::wire::Reader;

/// Bounds a [`Decoder`] enforces on untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest message (after its length prefix) accepted, in bytes.
    pub max_message: usize,
    /// Deepest nesting of values (and of types when building a [`GoType`]).
    pub max_depth: usize,
    /// Most values (every scalar, element and field counts one) in one
    /// top-level value; bounds memory to a small multiple of this.
    pub max_values: usize,
    /// Most nodes in one [`GoType`] rebuilt from descriptors (shared
    /// sub-types count every time they appear), so that descriptors
    /// referring to one another many times cannot blow up.
    pub max_type_nodes: usize,
}

impl Default for DecodeLimits {
    /// 16 MiB messages (Weave's mesh frames are at most 10 MiB), depth 64,
    /// four million values, types of ten thousand nodes.
    fn default() -> Self {
        DecodeLimits {
            max_message: 16 << 20,
            max_depth: 64,
            max_values: 4 << 20,
            max_type_nodes: 10_000,
        }
    }
}

/// A gob stream reader over a complete byte buffer. One `Decoder`
/// corresponds to one Go `gob.Decoder`: type definitions received earlier
/// in the stream apply to later values.
#[derive(Debug)]
pub struct Decoder<'a> {
    input: Reader<'a>,
    types: HashMap<TypeId, WireType>,
    limits: DecodeLimits,
}

/// Per-value decoding state: the type table, limits and the value budget.
struct Walk<'t> {
    types: &'t HashMap<TypeId, WireType>,
    limits: DecodeLimits,
    budget: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder over `data` with the default limits.
    pub fn new(data: &'a [u8]) -> Self {
        Self::with_limits(data, DecodeLimits::default())
    }

    /// A decoder over `data` with explicit limits.
    pub fn with_limits(data: &'a [u8], limits: DecodeLimits) -> Self {
        Decoder {
            input: Reader::new(data),
            types: HashMap::new(),
            limits,
        }
    }

    /// Whether all input was consumed.
    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// The bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.input.remaining()
    }

    /// The type definitions received so far, by id.
    pub fn wire_types(&self) -> &HashMap<TypeId, WireType> {
        &self.types
    }

    /// Decodes the next value as `T`. The end of input is an error here;
    /// use [`Decoder::next_typed`] to stop cleanly at the end.
    pub fn decode<T: Gob>(&mut self) -> Result<T, DecodeError> {
        self.next_typed()?
            .ok_or(DecodeError::UnexpectedEof("a gob value"))
    }

    /// Decodes the next value as `T`, or `None` at the end of input.
    pub fn next_typed<T: Gob>(&mut self) -> Result<Option<T>, DecodeError> {
        match self.next_value()? {
            Some(v) => Ok(Some(T::from_gob(v)?)),
            None => Ok(None),
        }
    }

    /// Decodes the next value dynamically, or `None` at the end of input.
    pub fn next_value(&mut self) -> Result<Option<Value>, DecodeError> {
        Ok(self.next_with_id()?.map(|(_, v)| v))
    }

    /// Decodes the next value together with its [`GoType`] rebuilt from the
    /// received descriptors, so that [`crate::Encoder::encode_value`]
    /// reproduces the input bytes. `None` at the end of input.
    pub fn next_dynamic(&mut self) -> Result<Option<(GoType, Value)>, DecodeError> {
        match self.next_with_id()? {
            Some((id, v)) => Ok(Some((self.go_type(id)?, v))),
            None => Ok(None),
        }
    }

    /// The [`GoType`] of a received (or predefined) type id. Struct fields
    /// are marked as pointers so that fields absent on the wire stay absent
    /// when re-encoded. Recursive types give [`DecodeError::TooDeep`].
    pub fn go_type(&self, id: TypeId) -> Result<GoType, DecodeError> {
        let mut budget = self.limits.max_type_nodes;
        self.build_type(id, 0, &mut budget)
    }

    fn build_type(
        &self,
        id: TypeId,
        depth: usize,
        budget: &mut usize,
    ) -> Result<GoType, DecodeError> {
        if depth > self.limits.max_depth {
            return Err(DecodeError::TooDeep(self.limits.max_depth));
        }
        *budget = budget
            .checked_sub(1)
            .ok_or(DecodeError::TypeTooLarge(self.limits.max_type_nodes))?;
        let basic = match id {
            BOOL_ID => Some(GoType::Bool),
            INT_ID => Some(GoType::Int),
            UINT_ID => Some(GoType::Uint),
            FLOAT_ID => Some(GoType::Float),
            BYTES_ID => Some(GoType::Bytes),
            STRING_ID => Some(GoType::String),
            COMPLEX_ID => Some(GoType::Complex),
            INTERFACE_ID => Some(GoType::Interface),
            _ => None,
        };
        if let Some(t) = basic {
            return Ok(t);
        }
        let wt = self.types.get(&id).ok_or(DecodeError::UnknownType(id))?;
        Ok(match wt {
            WireType::Struct { name, fields } => {
                let mut fs = Vec::with_capacity(fields.len());
                for (fname, fid) in fields {
                    fs.push(Field::pointer(
                        fname.clone(),
                        self.build_type(*fid, depth + 1, budget)?,
                    ));
                }
                GoType::Struct(Arc::new(StructType {
                    name: name.clone(),
                    fields: fs,
                }))
            }
            WireType::Slice { name, elem } => {
                GoType::slice(name.clone(), self.build_type(*elem, depth + 1, budget)?)
            }
            WireType::Array { name, elem, len } => {
                let len = u64::try_from(*len)
                    .map_err(|_| DecodeError::BadTypeDescriptor("negative array length"))?;
                GoType::array(
                    name.clone(),
                    self.build_type(*elem, depth + 1, budget)?,
                    len,
                )
            }
            WireType::Map { name, key, elem } => GoType::map(
                name.clone(),
                self.build_type(*key, depth + 1, budget)?,
                self.build_type(*elem, depth + 1, budget)?,
            ),
            WireType::Opaque { name, kind } => GoType::Opaque(Arc::new(OpaqueType {
                name: name.clone(),
                kind: *kind,
            })),
        })
    }

    /// Reads the next message, skipping empty ones; `None` at end of input.
    fn next_message(&mut self) -> Result<Option<Reader<'a>>, DecodeError> {
        loop {
            if self.input.is_empty() {
                return Ok(None);
            }
            let n = self.input.uint("message length")?;
            if n > self.limits.max_message as u64 {
                return Err(DecodeError::MessageTooBig {
                    len: n,
                    limit: self.limits.max_message,
                });
            }
            let body = self.input.take(n as usize, "message body")?;
            if !body.is_empty() {
                return Ok(Some(Reader::new(body)));
            }
        }
    }

    fn next_with_id(&mut self) -> Result<Option<(TypeId, Value)>, DecodeError> {
        let mut saw_type = false;
        loop {
            let Some(mut msg) = self.next_message()? else {
                return if saw_type {
                    Err(DecodeError::MissingValue)
                } else {
                    Ok(None)
                };
            };
            let id = msg.int("type id")?;
            if i32::try_from(id).is_err() {
                return Err(DecodeError::UnknownType(id));
            }
            if id < 0 {
                let id = -id;
                if id < FIRST_USER_ID || self.types.contains_key(&id) {
                    return Err(DecodeError::DuplicateType(id));
                }
                let wt = WireType::decode(&mut msg)?;
                if !msg.is_empty() {
                    return Err(DecodeError::ExtraDataAfterType);
                }
                self.types.insert(id, wt);
                saw_type = true;
                continue;
            }
            let mut walk = Walk {
                types: &self.types,
                limits: self.limits,
                budget: self.limits.max_values,
            };
            let value = match self.types.get(&id) {
                Some(WireType::Struct { fields, .. }) => {
                    Value::Struct(walk.structure(fields, &mut msg, 0)?)
                }
                _ => {
                    let delta = msg.uint("singleton delta")?;
                    if delta != 0 {
                        return Err(DecodeError::BadSingletonDelta(delta));
                    }
                    walk.item(id, &mut msg, 0)?
                }
            };
            // Like Go, bytes left in a value message are ignored.
            return Ok(Some((id, value)));
        }
    }
}

impl Walk<'_> {
    fn spend(&mut self) -> Result<(), DecodeError> {
        match self.budget.checked_sub(1) {
            Some(b) => {
                self.budget = b;
                Ok(())
            }
            None => Err(DecodeError::TooManyValues(self.limits.max_values)),
        }
    }

    fn structure(
        &mut self,
        fields: &[(String, TypeId)],
        r: &mut Reader<'_>,
        depth: usize,
    ) -> Result<StructValue, DecodeError> {
        let mut out = StructValue::new();
        let mut field: i64 = -1;
        loop {
            let delta = r.uint("struct field delta")?;
            if delta == 0 {
                return Ok(out);
            }
            field = field_after(field, delta, fields.len())?;
            let (name, fid) = fields
                .get(field as usize)
                .ok_or(DecodeError::FieldOutOfRange {
                    field: field as u64,
                    fields: fields.len(),
                })?;
            let v = self.item(*fid, r, depth + 1)?;
            out.push(name.clone(), v);
        }
    }

    fn item(&mut self, id: TypeId, r: &mut Reader<'_>, depth: usize) -> Result<Value, DecodeError> {
        if depth > self.limits.max_depth {
            return Err(DecodeError::TooDeep(self.limits.max_depth));
        }
        self.spend()?;
        Ok(match id {
            BOOL_ID => Value::Bool(r.uint("bool")? != 0),
            INT_ID => Value::Int(r.int("int")?),
            UINT_ID => Value::Uint(r.uint("uint")?),
            FLOAT_ID => Value::Float(r.float("float")?),
            COMPLEX_ID => {
                let re = r.float("complex")?;
                Value::Complex(re, r.float("complex")?)
            }
            BYTES_ID => Value::Bytes(r.bytes("[]byte")?.to_vec()),
            STRING_ID => Value::String(
                String::from_utf8(r.bytes("string")?.to_vec())
                    .map_err(|_| DecodeError::InvalidUtf8)?,
            ),
            INTERFACE_ID => {
                let name = r.bytes("interface name")?;
                if name.is_empty() {
                    Value::NilInterface
                } else {
                    return Err(DecodeError::Unsupported("non-nil interface values"));
                }
            }
            _ => {
                let types = self.types;
                let wt = types.get(&id).ok_or(DecodeError::UnknownType(id))?;
                match wt {
                    WireType::Struct { fields, .. } => {
                        Value::Struct(self.structure(fields, r, depth)?)
                    }
                    WireType::Slice { elem, .. } => {
                        let n = r.count(1, "slice length")?;
                        let mut items = Vec::with_capacity(n.min(self.budget));
                        for _ in 0..n {
                            items.push(self.item(*elem, r, depth + 1)?);
                        }
                        Value::Slice(items)
                    }
                    WireType::Array { elem, len, .. } => {
                        let n = r.count(1, "array length")?;
                        if n as u64 != *len as u64 || *len < 0 {
                            return Err(DecodeError::ArrayLength {
                                got: n as u64,
                                want: *len as u64,
                            });
                        }
                        let mut items = Vec::with_capacity(n.min(self.budget));
                        for _ in 0..n {
                            items.push(self.item(*elem, r, depth + 1)?);
                        }
                        Value::Array(items)
                    }
                    WireType::Map { key, elem, .. } => {
                        let n = r.count(2, "map length")?;
                        let mut entries = Vec::with_capacity(n.min(self.budget));
                        for _ in 0..n {
                            let k = self.item(*key, r, depth + 1)?;
                            let v = self.item(*elem, r, depth + 1)?;
                            entries.push((k, v));
                        }
                        Value::Map(entries)
                    }
                    WireType::Opaque { .. } => Value::Opaque(r.bytes("marshalled value")?.to_vec()),
                }
            }
        })
    }
}

/// Decodes exactly one typed value from bytes written by one fresh Go
/// encoder (type definitions, then the value). Bytes after the value are an error.
pub fn from_bytes<T: Gob>(data: &[u8]) -> Result<T, DecodeError> {
    let mut dec = Decoder::new(data);
    let v = dec.decode::<T>()?;
    if !dec.is_empty() {
        return Err(DecodeError::Malformed("bytes after the gob value"));
    }
    Ok(v)
}
