//! Malformed input gives typed errors (and Go's tolerances are kept).

use weave_gob::weave::ipam::{Address, GossipState, IpamUnicast, Range};
use weave_gob::weave::mesh::{self, GossipEnvelope, GossipKind};
use weave_gob::{DecodeError, DecodeLimits, Decoder, Encoder, Field, GoType, StructValue, Value};

fn range_bytes() -> Vec<u8> {
    Range {
        start: Address(1),
        end: Address(2),
    }
    .to_gob_bytes()
}

#[test]
fn empty_input_is_end_of_stream() {
    assert_eq!(Decoder::new(&[]).next_value(), Ok(None));
    assert!(matches!(
        Decoder::new(&[]).decode::<String>(),
        Err(DecodeError::UnexpectedEof(_))
    ));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = GossipState {
        now: 3,
        ring: Some(Default::default()),
        ..Default::default()
    }
    .to_gob_bytes();
    for cut in 1..full.len() {
        assert!(
            GossipState::from_gob_bytes(&full[..cut]).is_err(),
            "cut at {cut} decoded"
        );
    }
}

#[test]
fn type_definition_without_value() {
    let b = range_bytes();
    // The first message is the Range descriptor; keep only it.
    let first_len = usize::from(b[0]) + 1;
    assert_eq!(
        Decoder::new(&b[..first_len]).next_value(),
        Err(DecodeError::MissingValue)
    );
}

#[test]
fn duplicate_and_reserved_type_ids() {
    let b = range_bytes();
    let first_len = usize::from(b[0]) + 1;
    let mut twice = b[..first_len].to_vec();
    twice.extend_from_slice(&b);
    assert_eq!(
        Decoder::new(&twice).next_value(),
        Err(DecodeError::DuplicateType(65))
    );
    // Defining id 6 (string) is refused: [len 2][int -6 = 0x0b][...]
    assert_eq!(
        Decoder::new(&[0x02, 0x0b, 0x00]).next_value(),
        Err(DecodeError::DuplicateType(6))
    );
}

#[test]
fn unknown_type_id() {
    // A value of type 70 nobody defined: [len 2][int 70 = 0x8c? no: 140 needs two bytes]
    let mut msg = Vec::new();
    weave_gob::wire::put_int(&mut msg, 70);
    msg.push(0);
    let mut b = vec![msg.len() as u8];
    b.extend_from_slice(&msg);
    assert_eq!(
        Decoder::new(&b).next_value(),
        Err(DecodeError::UnknownType(70))
    );
}

#[test]
fn extra_data_after_a_type_definition() {
    let mut b = range_bytes();
    let first_len = usize::from(b[0]);
    // Grow the first message by one byte of junk.
    b[0] += 1;
    b.insert(first_len + 1, 0x00);
    assert_eq!(
        Decoder::new(&b).next_value(),
        Err(DecodeError::ExtraDataAfterType)
    );
}

#[test]
fn bytes_left_in_a_value_message_are_ignored_like_go() {
    let mut enc = Encoder::new();
    enc.encode(&"a".to_string()).unwrap();
    enc.encode(&"b".to_string()).unwrap();
    let mut b = enc.into_bytes();
    // First message: [len][0x0c][0x00][0x01]['a']; append junk inside it.
    b[0] += 2;
    b.insert(5, 0xff);
    b.insert(5, 0xff);
    let mut dec = Decoder::new(&b);
    assert_eq!(dec.decode::<String>().unwrap(), "a");
    assert_eq!(dec.decode::<String>().unwrap(), "b");
}

#[test]
fn empty_messages_are_skipped_like_go() {
    let mut b = vec![0x00, 0x00];
    b.extend_from_slice(&range_bytes());
    assert_eq!(
        weave_gob::from_bytes::<Range>(&b).unwrap(),
        Range {
            start: Address(1),
            end: Address(2)
        }
    );
}

#[test]
fn singleton_needs_zero_delta() {
    // string "x" with delta 1 instead of 0.
    let b = [0x04, 0x0c, 0x01, 0x01, b'x'];
    assert_eq!(
        Decoder::new(&b).next_value(),
        Err(DecodeError::BadSingletonDelta(1))
    );
}

#[test]
fn field_numbers_past_the_struct() {
    let mut b = range_bytes();
    // The value message ends: [..][field delta 1][Start][field delta 1][End][0].
    // Make the first delta 3 (Range has 2 fields).
    // The value message follows the descriptor: [len][id 65: ff 82][delta]...
    let delta_at = usize::from(b[0]) + 1 + 3;
    assert_eq!(b[delta_at], 0x01);
    b[delta_at] = 0x03;
    assert!(matches!(
        Decoder::new(&b).next_value(),
        Err(DecodeError::FieldOutOfRange { fields: 2, .. })
    ));
}

#[test]
fn oversized_lengths_and_messages() {
    // A string claiming 100 bytes with 1 left.
    let b = [0x04, 0x0c, 0x00, 0x64, b'x'];
    assert!(matches!(
        Decoder::new(&b).next_value(),
        Err(DecodeError::LengthTooBig { len: 100, .. })
    ));
    // A message length over the limit.
    let limits = DecodeLimits {
        max_message: 10,
        ..Default::default()
    };
    let b = [0x20, 0x00];
    assert!(matches!(
        Decoder::with_limits(&b, limits).next_value(),
        Err(DecodeError::MessageTooBig { len: 32, limit: 10 })
    ));
    // A message length beyond the input.
    assert!(matches!(
        Decoder::new(&[0x05, 0x0c]).next_value(),
        Err(DecodeError::UnexpectedEof(_))
    ));
    // A uint with 9 bytes.
    assert_eq!(
        Decoder::new(&[0xf7]).next_value(),
        Err(DecodeError::BadUint(9))
    );
}

#[test]
fn nesting_and_value_count_limits() {
    // [][][]...[]int nested 10 deep, limit 4.
    let mut ty = GoType::Int;
    let mut v = Value::Int(1);
    for _ in 0..10 {
        ty = GoType::slice("", ty);
        v = Value::Slice(vec![v]);
    }
    let mut enc = Encoder::new();
    enc.encode_value(&ty, &v).unwrap();
    let b = enc.into_bytes();
    let shallow = DecodeLimits {
        max_depth: 4,
        ..Default::default()
    };
    assert!(matches!(
        Decoder::with_limits(&b, shallow).next_value(),
        Err(DecodeError::TooDeep(4))
    ));
    assert!(Decoder::new(&b).next_value().is_ok());

    let many = Value::Slice((0..100).map(Value::Uint).collect());
    let mut enc = Encoder::new();
    enc.encode_value(&GoType::slice("", GoType::Uint), &many)
        .unwrap();
    let few = DecodeLimits {
        max_values: 50,
        ..Default::default()
    };
    assert_eq!(
        Decoder::with_limits(enc.bytes(), few).next_value(),
        Err(DecodeError::TooManyValues(50))
    );
}

#[test]
fn invalid_utf8_and_non_nil_interfaces() {
    let b = [0x04, 0x0c, 0x00, 0x01, 0xff];
    assert_eq!(Decoder::new(&b).next_value(), Err(DecodeError::InvalidUtf8));
    // An interface slice element naming a concrete type.
    let ty = GoType::slice("", GoType::Interface);
    let mut enc = Encoder::new();
    enc.encode_value(&ty, &Value::Slice(vec![Value::NilInterface]))
        .unwrap();
    let mut b = enc.into_bytes();
    assert_eq!(
        Decoder::new(&b).next_value().unwrap(),
        Some(Value::Slice(vec![Value::NilInterface]))
    );
    // Replace the nil interface (name length 0) by the name "x".
    let last = b.len() - 1;
    b[last] = 0x01;
    b.push(b'x');
    let value_len_at = usize::from(b[0]) + 1;
    b[value_len_at] += 1;
    assert_eq!(
        Decoder::new(&b).next_value(),
        Err(DecodeError::Unsupported("non-nil interface values"))
    );
}

#[test]
fn wrong_shapes_for_weave_types() {
    // A string where the features map is expected.
    let mut enc = Encoder::new();
    enc.encode(&"nope".to_string()).unwrap();
    assert!(matches!(
        mesh::decode_features(enc.bytes()),
        Err(DecodeError::Value(_))
    ));
    assert!(GossipEnvelope::decode(GossipKind::Gossip, enc.bytes()).is_err());
    assert!(matches!(
        IpamUnicast::decode(&[]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        IpamUnicast::decode(&[9]),
        Err(DecodeError::Malformed(_))
    ));
    // A topology update whose last peer lacks its connection list is cut there, as mesh does.
    let mut enc = Encoder::new();
    enc.encode(&weave_gob::weave::mesh::PeerSummary::default())
        .unwrap();
    assert_eq!(mesh::decode_topology(enc.bytes()).unwrap(), vec![]);
}

#[test]
fn encoder_rejects_mismatched_values_and_leaves_stream_untouched() {
    let ty = GoType::structure("T", vec![Field::new("A", GoType::Uint)]);
    let mut enc = Encoder::new();
    let bad = Value::Struct(StructValue::new().with("A", Value::String("x".into())));
    assert!(enc.encode_value(&ty, &bad).is_err());
    assert!(enc.bytes().is_empty());
    let arr = GoType::array("", GoType::Int, 2);
    assert!(enc.encode_value(&arr, &Value::Array(vec![])).is_err());
    assert!(enc.bytes().is_empty());
}

#[test]
fn descriptors_sharing_sub_types_cannot_blow_up() {
    use weave_gob::WireType;
    use weave_gob::wire::{put_int, put_uint};
    // T65 { A T66; B T66 }, T66 { A T67; B T67 }, ... 40 levels: a tree of
    // 2^40 nodes if expanded.
    let mut b = Vec::new();
    let levels = 40;
    for i in 0..levels {
        let id = 65 + i;
        let child = if i + 1 == levels { 3 } else { id + 1 };
        let wt = WireType::Struct {
            name: format!("T{i}"),
            fields: vec![("A".into(), child), ("B".into(), child)],
        };
        let mut msg = Vec::new();
        put_int(&mut msg, -id);
        wt.encode(id, &mut msg);
        put_uint(&mut b, msg.len() as u64);
        b.extend_from_slice(&msg);
    }
    // A value of T65 with no fields set: [len 3][id 65 = ff 82][0].
    b.extend_from_slice(&[0x03, 0xff, 0x82, 0x00]);
    // Values decode (nothing is expanded)...
    assert_eq!(
        Decoder::new(&b).next_value(),
        Ok(Some(Value::Struct(StructValue::new())))
    );
    // ...but the type description is refused, quickly.
    assert_eq!(
        Decoder::new(&b).next_dynamic().map(|_| ()),
        Err(DecodeError::TypeTooLarge(10_000))
    );
}
