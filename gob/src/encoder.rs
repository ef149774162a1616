//! [`Encoder`]: writes a gob stream, sending each type's descriptor once
//! before its first value, with type ids handed out the way a fresh Go
//! process does.

use std::collections::{HashMap, HashSet};

use crate::error::EncodeError;
use crate::typed::Gob;
use crate::types::{FIRST_USER_ID, GoType, TypeId, WireType};
use crate::value::{StructValue, Value};
use crate::wire::{put_bytes, put_float, put_int, put_uint};

/// How deep types and values may nest before encoding gives up.
pub const MAX_ENCODE_DEPTH: usize = 100;

/// A gob stream writer. One `Encoder` corresponds to one Go `gob.Encoder`:
/// type descriptors are sent once per encoder.
#[derive(Debug)]
pub struct Encoder {
    out: Vec<u8>,
    ids: HashMap<GoType, TypeId>,
    sent: HashSet<GoType>,
    next_id: TypeId,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// A new encoder with an empty output buffer.
    pub fn new() -> Self {
        Encoder {
            out: Vec::new(),
            ids: HashMap::new(),
            sent: HashSet::new(),
            next_id: FIRST_USER_ID,
        }
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.out
    }

    /// Takes the bytes written so far, leaving the output empty; the set of
    /// types already sent is kept (as for a Go encoder on a stream).
    pub fn take_bytes(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Consumes the encoder, returning its output.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    /// Encodes a typed value.
    pub fn encode<T: Gob>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.encode_value(&T::go_type(), &value.to_gob())
    }

    /// Encodes `value` as Go type `ty`: any missing type descriptors, then
    /// one value message. On error nothing is appended.
    pub fn encode_value(&mut self, ty: &GoType, value: &Value) -> Result<(), EncodeError> {
        // Build the value message first so an error leaves the stream untouched.
        let mut body = Vec::new();
        let id = self.assign(ty, 0)?;
        put_int(&mut body, id);
        match (ty, value) {
            (GoType::Struct(st), Value::Struct(sv)) => encode_struct(&mut body, st, sv, 0)?,
            (GoType::Struct(_), other) => {
                return Err(EncodeError::Mismatch {
                    expected: "struct",
                    found: other.kind_name(),
                });
            }
            _ => {
                // A non-struct top-level value is a singleton field: delta 0,
                // then the value, sent even when zero.
                put_uint(&mut body, 0);
                encode_elem(&mut body, ty, value, 0)?;
            }
        }
        let mut descriptors = Vec::new();
        self.send_type(ty, &mut descriptors);
        self.out.extend_from_slice(&descriptors);
        put_uint(&mut self.out, body.len() as u64);
        self.out.extend_from_slice(&body);
        Ok(())
    }

    /// Hands out type ids for `ty` and everything it contains, in Go's
    /// order: a struct takes its id before its fields' types; slices, arrays
    /// and maps take theirs after their element (and key) types.
    fn assign(&mut self, ty: &GoType, depth: usize) -> Result<TypeId, EncodeError> {
        if let Some(id) = ty.predefined_id() {
            return Ok(id);
        }
        if let Some(&id) = self.ids.get(ty) {
            return Ok(id);
        }
        if depth > MAX_ENCODE_DEPTH {
            return Err(EncodeError::TooDeep(MAX_ENCODE_DEPTH));
        }
        let id = match ty {
            GoType::Struct(st) => {
                let id = self.fresh(ty);
                for f in &st.fields {
                    self.assign(&f.ty, depth + 1)?;
                }
                id
            }
            GoType::Slice(s) => {
                self.assign(&s.elem, depth + 1)?;
                self.fresh(ty)
            }
            GoType::Array(a) => {
                self.assign(&a.elem, depth + 1)?;
                self.fresh(ty)
            }
            GoType::Map(m) => {
                self.assign(&m.key, depth + 1)?;
                self.assign(&m.elem, depth + 1)?;
                self.fresh(ty)
            }
            _ => self.fresh(ty),
        };
        Ok(id)
    }

    fn fresh(&mut self, ty: &GoType) -> TypeId {
        let id = self.next_id;
        self.next_id += 1;
        self.ids.insert(ty.clone(), id);
        id
    }

    fn id_of(&self, ty: &GoType) -> TypeId {
        ty.predefined_id()
            .or_else(|| self.ids.get(ty).copied())
            .unwrap_or(0)
    }

    /// Sends the descriptor of `ty` if not yet sent, then those of the
    /// types inside it (Go's order: the outer type first). Ids were all
    /// assigned before, so this cannot fail.
    fn send_type(&mut self, ty: &GoType, out: &mut Vec<u8>) {
        if ty.predefined_id().is_some() || self.sent.contains(ty) {
            return;
        }
        let id = self.id_of(ty);
        let wire = match ty {
            GoType::Struct(st) => WireType::Struct {
                name: st.name.clone(),
                fields: st
                    .fields
                    .iter()
                    .map(|f| (f.name.clone(), self.id_of(&f.ty)))
                    .collect(),
            },
            GoType::Slice(s) => WireType::Slice {
                name: s.name.clone(),
                elem: self.id_of(&s.elem),
            },
            GoType::Array(a) => WireType::Array {
                name: a.name.clone(),
                elem: self.id_of(&a.elem),
                len: a.len as i64,
            },
            GoType::Map(m) => WireType::Map {
                name: m.name.clone(),
                key: self.id_of(&m.key),
                elem: self.id_of(&m.elem),
            },
            GoType::Opaque(o) => WireType::Opaque {
                name: o.name.clone(),
                kind: o.kind,
            },
            _ => return,
        };
        let mut msg = Vec::new();
        put_int(&mut msg, -id);
        wire.encode(id, &mut msg);
        put_uint(out, msg.len() as u64);
        out.extend_from_slice(&msg);
        self.sent.insert(ty.clone());
        match ty {
            GoType::Struct(st) => {
                for f in &st.fields {
                    self.send_type(&f.ty, out);
                }
            }
            GoType::Slice(s) => self.send_type(&s.elem, out),
            GoType::Array(a) => self.send_type(&a.elem, out),
            GoType::Map(m) => {
                self.send_type(&m.key, out);
                self.send_type(&m.elem, out);
            }
            _ => {}
        }
    }
}

fn mismatch(ty: &GoType, v: &Value) -> EncodeError {
    EncodeError::Mismatch {
        expected: ty.kind_name(),
        found: v.kind_name(),
    }
}

/// Encodes a struct's fields (omitting zero ones) and its terminator.
fn encode_struct(
    buf: &mut Vec<u8>,
    st: &crate::types::StructType,
    sv: &StructValue,
    depth: usize,
) -> Result<(), EncodeError> {
    if depth > MAX_ENCODE_DEPTH {
        return Err(EncodeError::TooDeep(MAX_ENCODE_DEPTH));
    }
    let mut last: i64 = -1;
    for (i, f) in st.fields.iter().enumerate() {
        let i = i as i64;
        match sv.get(&f.name) {
            None => {
                let always = matches!(f.ty, GoType::Struct(_) | GoType::Array(_));
                if always && !f.pointer {
                    put_uint(buf, (i - last) as u64);
                    last = i;
                    encode_zero(buf, &f.ty, depth + 1)?;
                }
            }
            Some(v) => {
                if v.omitted_as_field() {
                    // Still check the kind so a wrong value is reported.
                    check_kind(&f.ty, v)?;
                    continue;
                }
                put_uint(buf, (i - last) as u64);
                last = i;
                encode_elem(buf, &f.ty, v, depth + 1)?;
            }
        }
    }
    buf.push(0);
    Ok(())
}

fn check_kind(ty: &GoType, v: &Value) -> Result<(), EncodeError> {
    let ok = matches!(
        (ty, v),
        (GoType::Bool, Value::Bool(_))
            | (GoType::Int, Value::Int(_))
            | (GoType::Uint, Value::Uint(_))
            | (GoType::Float, Value::Float(_))
            | (GoType::Complex, Value::Complex(..))
            | (GoType::String, Value::String(_))
            | (GoType::Bytes, Value::Bytes(_))
            | (GoType::Slice(_), Value::Slice(_))
            | (GoType::Interface, Value::NilInterface)
    );
    if ok { Ok(()) } else { Err(mismatch(ty, v)) }
}

/// Encodes a value in a position where it is always sent (slice, array and
/// map elements; a present struct field; a top-level singleton).
fn encode_elem(buf: &mut Vec<u8>, ty: &GoType, v: &Value, depth: usize) -> Result<(), EncodeError> {
    if depth > MAX_ENCODE_DEPTH {
        return Err(EncodeError::TooDeep(MAX_ENCODE_DEPTH));
    }
    match (ty, v) {
        (GoType::Bool, Value::Bool(b)) => put_uint(buf, u64::from(*b)),
        (GoType::Int, Value::Int(i)) => put_int(buf, *i),
        (GoType::Uint, Value::Uint(u)) => put_uint(buf, *u),
        (GoType::Float, Value::Float(f)) => put_float(buf, *f),
        (GoType::Complex, Value::Complex(r, i)) => {
            put_float(buf, *r);
            put_float(buf, *i);
        }
        (GoType::String, Value::String(s)) => put_bytes(buf, s.as_bytes()),
        (GoType::Bytes, Value::Bytes(b)) => put_bytes(buf, b),
        (GoType::Interface, Value::NilInterface) => put_uint(buf, 0),
        (GoType::Struct(st), Value::Struct(sv)) => encode_struct(buf, st, sv, depth)?,
        (GoType::Slice(s), Value::Slice(items)) => {
            put_uint(buf, items.len() as u64);
            for item in items {
                encode_elem(buf, &s.elem, item, depth + 1)?;
            }
        }
        (GoType::Array(a), Value::Array(items)) => {
            if items.len() as u64 != a.len {
                return Err(EncodeError::ArrayLength {
                    got: items.len(),
                    want: a.len,
                });
            }
            put_uint(buf, a.len);
            for item in items {
                encode_elem(buf, &a.elem, item, depth + 1)?;
            }
        }
        (GoType::Map(m), Value::Map(entries)) => {
            put_uint(buf, entries.len() as u64);
            for (k, e) in entries {
                encode_elem(buf, &m.key, k, depth + 1)?;
                encode_elem(buf, &m.elem, e, depth + 1)?;
            }
        }
        (GoType::Opaque(_), Value::Opaque(b)) => put_bytes(buf, b),
        _ => return Err(mismatch(ty, v)),
    }
    Ok(())
}

/// Encodes the zero value of a type as an always-sent item.
fn encode_zero(buf: &mut Vec<u8>, ty: &GoType, depth: usize) -> Result<(), EncodeError> {
    if depth > MAX_ENCODE_DEPTH {
        return Err(EncodeError::TooDeep(MAX_ENCODE_DEPTH));
    }
    match ty {
        GoType::Bool
        | GoType::Int
        | GoType::Uint
        | GoType::Float
        | GoType::String
        | GoType::Bytes
        | GoType::Interface
        | GoType::Slice(_)
        | GoType::Map(_) => put_uint(buf, 0),
        GoType::Complex => {
            put_uint(buf, 0);
            put_uint(buf, 0);
        }
        GoType::Struct(st) => encode_struct(buf, st, &StructValue::new(), depth)?,
        GoType::Array(a) => {
            put_uint(buf, a.len);
            for _ in 0..a.len {
                encode_zero(buf, &a.elem, depth + 1)?;
            }
        }
        GoType::Opaque(_) => return Err(EncodeError::Unsupported("zero value of an opaque type")),
    }
    Ok(())
}

/// Encodes one typed value on a fresh encoder (what Go's
/// `gob.NewEncoder(buf).Encode(v)` writes).
pub fn to_bytes<T: Gob>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut enc = Encoder::new();
    enc.encode(value)?;
    Ok(enc.into_bytes())
}
