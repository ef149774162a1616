//! [`Value`]: a dynamically typed gob value, as decoded from the wire or
//! built by hand before encoding.

/// A gob value of any type.
///
/// Maps keep their entries in wire order (a `Vec` of pairs) so that decoding
/// and re-encoding reproduces the input bytes exactly, whatever order the Go
/// side iterated its map in.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A `bool`.
    Bool(bool),
    /// Any signed integer.
    Int(i64),
    /// Any unsigned integer.
    Uint(u64),
    /// Any float.
    Float(f64),
    /// A complex number (real, imaginary).
    Complex(f64, f64),
    /// A `string`.
    String(String),
    /// A `[]byte`.
    Bytes(Vec<u8>),
    /// A struct.
    Struct(StructValue),
    /// A slice.
    Slice(Vec<Value>),
    /// An array.
    Array(Vec<Value>),
    /// A map, entries in wire order.
    Map(Vec<(Value, Value)>),
    /// A nil interface value.
    NilInterface,
    /// The bytes of a self-marshalling (GobEncoder/BinaryMarshaler/TextMarshaler) value.
    Opaque(Vec<u8>),
}

/// A struct value: the fields present, by Go field name.
///
/// Fields that are absent read as their zero value (gob omits zero fields).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StructValue {
    /// Field names and values, in field-number order when decoded.
    pub fields: Vec<(String, Value)>,
}

impl StructValue {
    /// An empty struct value (every field zero).
    pub fn new() -> Self {
        StructValue::default()
    }

    /// Adds a field, builder style.
    pub fn with(mut self, name: impl Into<String>, value: Value) -> Self {
        self.fields.push((name.into(), value));
        self
    }

    /// Adds a field.
    pub fn push(&mut self, name: impl Into<String>, value: Value) {
        self.fields.push((name.into(), value));
    }

    /// The field named `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Removes and returns the field named `name`, if present.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        let i = self.fields.iter().position(|(n, _)| n == name)?;
        Some(self.fields.swap_remove(i).1)
    }
}

impl Value {
    /// A short name of the kind, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Uint(_) => "uint",
            Value::Float(_) => "float",
            Value::Complex(..) => "complex",
            Value::String(_) => "string",
            Value::Bytes(_) => "[]byte",
            Value::Struct(_) => "struct",
            Value::Slice(_) => "slice",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::NilInterface => "interface",
            Value::Opaque(_) => "opaque",
        }
    }

    /// Whether gob omits this value when it is a struct field: zero numbers,
    /// `false`, empty strings/byte slices/slices and nil interfaces. Maps
    /// (even empty), structs and arrays are always sent when present.
    pub fn omitted_as_field(&self) -> bool {
        match self {
            Value::Bool(b) => !b,
            Value::Int(i) => *i == 0,
            Value::Uint(u) => *u == 0,
            Value::Float(f) => *f == 0.0,
            Value::Complex(r, i) => *r == 0.0 && *i == 0.0,
            Value::String(s) => s.is_empty(),
            Value::Bytes(b) => b.is_empty(),
            Value::Slice(s) => s.is_empty(),
            Value::NilInterface => true,
            Value::Struct(_) | Value::Array(_) | Value::Map(_) | Value::Opaque(_) => false,
        }
    }
}
