//! The [`Gob`] trait: Rust types that know their Go type and convert to and
//! from [`Value`], plus implementations for the basic Go types.

use std::collections::BTreeMap;

use crate::error::ValueError;
use crate::types::GoType;
use crate::value::{StructValue, Value};

/// A Rust type with a fixed Go (gob) type.
///
/// Implement it by hand for structs: `go_type` lists the Go fields in
/// declaration order, `to_gob` builds a [`StructValue`] and `from_gob` takes
/// fields by name with [`StructValue::field`], so fields the other side adds,
/// drops or reorders are tolerated as Go's decoder does. `Default` is the Go
/// zero value, used for fields absent on the wire.
pub trait Gob: Sized + Default {
    /// The Go type this Rust type is sent as.
    fn go_type() -> GoType;
    /// Converts to a dynamic value.
    fn to_gob(&self) -> Value;
    /// Converts from a dynamic value, checking kinds and ranges as Go does.
    fn from_gob(value: Value) -> Result<Self, ValueError>;
}

fn mismatch(expected: &'static str, v: &Value) -> ValueError {
    ValueError::Mismatch {
        expected,
        found: v.kind_name(),
    }
}

impl Value {
    /// This value as a struct, or a mismatch error.
    pub fn into_struct(self) -> Result<StructValue, ValueError> {
        match self {
            Value::Struct(s) => Ok(s),
            other => Err(mismatch("struct", &other)),
        }
    }
}

impl StructValue {
    /// Takes field `name` as `T`; an absent field is `T::default()` (the Go
    /// zero value). Errors name the field.
    pub fn field<T: Gob>(&mut self, name: &str) -> Result<T, ValueError> {
        match self.take(name) {
            None => Ok(T::default()),
            Some(v) => T::from_gob(v).map_err(|e| ValueError::InField {
                field: name.to_string(),
                source: Box::new(e),
            }),
        }
    }

    /// Takes a pointer or map field whose absence (Go nil) matters: `None`
    /// when absent.
    pub fn optional_field<T: Gob>(&mut self, name: &str) -> Result<Option<T>, ValueError> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => T::from_gob(v).map(Some).map_err(|e| ValueError::InField {
                field: name.to_string(),
                source: Box::new(e),
            }),
        }
    }
}

impl Gob for bool {
    fn go_type() -> GoType {
        GoType::Bool
    }
    fn to_gob(&self) -> Value {
        Value::Bool(*self)
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        match value {
            Value::Bool(b) => Ok(b),
            other => Err(mismatch("bool", &other)),
        }
    }
}

macro_rules! unsigned {
    ($t:ty, $go:literal) => {
        impl Gob for $t {
            fn go_type() -> GoType {
                GoType::Uint
            }
            fn to_gob(&self) -> Value {
                Value::Uint(u64::from(*self))
            }
            fn from_gob(value: Value) -> Result<Self, ValueError> {
                match value {
                    Value::Uint(u) => <$t>::try_from(u).map_err(|_| ValueError::OutOfRange {
                        ty: $go,
                        value: u.to_string(),
                    }),
                    other => Err(mismatch($go, &other)),
                }
            }
        }
    };
}
unsigned!(u64, "uint64");
unsigned!(u32, "uint32");
unsigned!(u16, "uint16");

macro_rules! signed {
    ($t:ty, $go:literal) => {
        impl Gob for $t {
            fn go_type() -> GoType {
                GoType::Int
            }
            fn to_gob(&self) -> Value {
                Value::Int(i64::from(*self))
            }
            fn from_gob(value: Value) -> Result<Self, ValueError> {
                match value {
                    Value::Int(i) => <$t>::try_from(i).map_err(|_| ValueError::OutOfRange {
                        ty: $go,
                        value: i.to_string(),
                    }),
                    other => Err(mismatch($go, &other)),
                }
            }
        }
    };
}
signed!(i64, "int64");
signed!(i32, "int32");
signed!(i16, "int16");

impl Gob for f64 {
    fn go_type() -> GoType {
        GoType::Float
    }
    fn to_gob(&self) -> Value {
        Value::Float(*self)
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        match value {
            Value::Float(f) => Ok(f),
            other => Err(mismatch("float64", &other)),
        }
    }
}

impl Gob for String {
    fn go_type() -> GoType {
        GoType::String
    }
    fn to_gob(&self) -> Value {
        Value::String(self.clone())
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(mismatch("string", &other)),
        }
    }
}

/// A Go `[]byte` (a `Vec<u8>` would be a slice of integers).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl Gob for Bytes {
    fn go_type() -> GoType {
        GoType::Bytes
    }
    fn to_gob(&self) -> Value {
        Value::Bytes(self.0.clone())
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        match value {
            Value::Bytes(b) => Ok(Bytes(b)),
            other => Err(mismatch("[]byte", &other)),
        }
    }
}

/// An unnamed Go slice `[]T` (descriptor name `""`, as at top level).
impl<T: Gob> Gob for Vec<T> {
    fn go_type() -> GoType {
        GoType::slice("", T::go_type())
    }
    fn to_gob(&self) -> Value {
        Value::Slice(self.iter().map(Gob::to_gob).collect())
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        match value {
            Value::Slice(items) => items.into_iter().map(T::from_gob).collect(),
            other => Err(mismatch("slice", &other)),
        }
    }
}

/// An unnamed Go map `map[K]V` (descriptor name `""`). Encoded in key
/// order; on decoding a repeated key, the last entry wins (as in Go).
impl<K: Gob + Ord, V: Gob> Gob for BTreeMap<K, V> {
    fn go_type() -> GoType {
        GoType::map("", K::go_type(), V::go_type())
    }
    fn to_gob(&self) -> Value {
        Value::Map(self.iter().map(|(k, v)| (k.to_gob(), v.to_gob())).collect())
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        match value {
            Value::Map(entries) => {
                let mut m = BTreeMap::new();
                for (k, v) in entries {
                    m.insert(K::from_gob(k)?, V::from_gob(v)?);
                }
                Ok(m)
            }
            other => Err(mismatch("map", &other)),
        }
    }
}
