//! The Sparkplug B payload (`sparkplug_b.proto`, package
//! `org.eclipse.tahu.protobuf`), the part of it an edge node sends and
//! receives, written out with prost's derive so the build needs no `protoc`.
//!
//! Field numbers and types follow the spec's proto2 file exactly. Fields
//! linesight never sends (metadata, properties, datasets, templates,
//! extensions) are left out; prost skips them when decoding, so a command
//! that carries one still decodes, and a metric whose value is one of them
//! arrives with no value (and is refused by the command handler).

/// `Payload`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// `Payload.Metric`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<Value>,
}

/// `Payload.Metric.value` (the scalar members).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    #[prost(float, tag = "12")]
    FloatValue(f32),
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    #[prost(string, tag = "15")]
    StringValue(String),
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
}

/// `DataType` codes (Sparkplug 3.0, 6.4.16) that linesight uses or accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum DataType {
    Int8 = 1,
    Int16 = 2,
    Int32 = 3,
    Int64 = 4,
    UInt8 = 5,
    UInt16 = 6,
    UInt32 = 7,
    UInt64 = 8,
    Float = 9,
    Double = 10,
    Boolean = 11,
    String = 12,
    DateTime = 13,
    Text = 14,
}

impl DataType {
    pub fn from_code(code: u32) -> Option<DataType> {
        use DataType::*;
        Some(match code {
            1 => Int8,
            2 => Int16,
            3 => Int32,
            4 => Int64,
            5 => UInt8,
            6 => UInt16,
            7 => UInt32,
            8 => UInt64,
            9 => Float,
            10 => Double,
            11 => Boolean,
            12 => String,
            13 => DateTime,
            14 => Text,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn encodes_the_wire_format_of_the_spec() {
        // bdSeq = 3 as Int64: name (1) "bdSeq", datatype (4) = 4, long_value (11) = 3.
        let p = Payload {
            timestamp: Some(1),
            metrics: vec![Metric {
                name: Some("bdSeq".into()),
                datatype: Some(DataType::Int64 as u32),
                value: Some(Value::LongValue(3)),
                ..Default::default()
            }],
            seq: Some(0),
            ..Default::default()
        };
        let bytes = p.encode_to_vec();
        let expected: &[u8] = &[
            0x08, 0x01, // timestamp = 1
            0x12, 0x0b, // metrics, 11 bytes
            0x0a, 0x05, b'b', b'd', b'S', b'e', b'q', // name
            0x20, 0x04, // datatype = Int64
            0x58, 0x03, // long_value = 3
            0x18, 0x00, // seq = 0
        ];
        assert_eq!(bytes, expected);
        assert_eq!(Payload::decode(expected).unwrap(), p);
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // A metric with a dataset value (field 17) still decodes, without a value.
        let bytes: &[u8] = &[0x12, 0x06, 0x0a, 0x01, b'x', 0x8a, 0x01, 0x00];
        let p = Payload::decode(bytes).unwrap();
        assert_eq!(p.metrics[0].name.as_deref(), Some("x"));
        assert_eq!(p.metrics[0].value, None);
    }
}
