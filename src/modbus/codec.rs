//! Turning Modbus registers and bits into engineering values and back, and
//! planning the reads that fetch them.
//!
//! Modbus only knows 16-bit registers and single bits. Everything else is a
//! convention of the device:
//!
//! - **Values spanning registers.** A `u32`, `i32` or `f32` takes two
//!   registers, a 64-bit value four, a string `length` registers (two ASCII
//!   characters each). They must be read in one request or the halves may come
//!   from different scans.
//! - **Byte and word order.** The standard says registers travel big-endian
//!   but says nothing about the order of the registers of a wider value, and
//!   some devices swap bytes too. [`WordOrder`] names the four layouts seen in
//!   the field (`ABCD` big-endian, `CDAB` word swap, `BADC` byte swap, `DCBA`
//!   little-endian); getting it wrong yields plausible-looking garbage, so the
//!   conversions here are tested against known vectors.
//! - **Scale and offset.** Devices often send fixed-point integers (tenths of
//!   a degree, hundredths of a bar). The engineering value is
//!   `raw * scale + offset`; writes invert it, and refuse values the raw type
//!   cannot hold instead of silently wrapping or truncating them.
//! - **Merging reads.** Every request is a round trip (milliseconds on a
//!   serial bus), so neighbouring points of one device are read together by
//!   [`plan_reads`], within the protocol limits of one request (125 registers
//!   or 2000 bits) and never across the top of the address space. Reading a few
//!   unused registers between two points is cheaper than another round trip.
//!
//! The functions here are pure: no I/O, no clocks, so they are tested exhaustively
//! in isolation.

use crate::config::{wire_address, ModbusDeviceConfig, PointArea, PointConfig, PointType, WordOrder};
use crate::part::sample::Value;

/// Most registers one read request may return (function codes 3 and 4).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Most bits one read request may return (function codes 1 and 2).
pub const MAX_READ_BITS: u16 = 2000;

/// Everything needed to read/write one point, resolved from config (protocol address, defaults applied).
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    pub area: PointArea,
    /// Protocol (zero-based) address of the first register or bit.
    pub address: u16,
    pub ty: PointType,
    /// For a bool read from a register: the bit, 0 (least significant) to 15.
    pub bit: Option<u8>,
    /// Registers the value occupies (1 for a bit or a register bit).
    pub count: u16,
    pub order: WordOrder,
    pub scale: f64,
    pub offset: f64,
    /// A writable number's engineering limits (`min`, `max`): a command outside them is refused.
    pub limits: Option<(f64, f64)>,
}

impl PointSpec {
    /// Resolve a validated point: protocol address, type (bool by default), register count, the
    /// device's order unless the point overrides it, scale 1 and offset 0 unless given.
    pub fn from_config(p: &PointConfig, dev: &ModbusDeviceConfig) -> PointSpec {
        let ty = p.value_type();
        let count = if p.area.is_bits() { 1 } else { ty.registers(p.length).max(1) };
        PointSpec {
            area: p.area,
            address: wire_address(dev.addressing, p.address),
            ty,
            bit: p.bit,
            count,
            order: p.order.unwrap_or(dev.order),
            scale: p.scale.unwrap_or(1.0),
            offset: p.offset.unwrap_or(0.0),
            limits: p.min.zip(p.max),
        }
    }

    fn is_scaled(&self) -> bool {
        self.scale != 1.0 || self.offset != 0.0
    }
}

fn byte_swapped(order: WordOrder) -> bool {
    matches!(order, WordOrder::BADC | WordOrder::DCBA)
}

fn words_reversed(order: WordOrder) -> bool {
    matches!(order, WordOrder::CDAB | WordOrder::DCBA)
}

/// Assemble up to four registers into one integer, most significant word first after reordering.
fn words_to_raw(words: &[u16], order: WordOrder) -> u64 {
    let word = |w: u16| u64::from(if byte_swapped(order) { w.swap_bytes() } else { w });
    if words_reversed(order) {
        words.iter().rev().fold(0, |acc, &w| (acc << 16) | word(w))
    } else {
        words.iter().fold(0, |acc, &w| (acc << 16) | word(w))
    }
}

/// Split the low `n * 16` bits of `raw` into `n` registers in the given order (inverse of [`words_to_raw`]).
fn raw_to_words(raw: u64, n: u16, order: WordOrder) -> Vec<u16> {
    let mut words: Vec<u16> = (0..n)
        .rev()
        .map(|i| {
            let w = (raw >> (16 * u32::from(i))) as u16;
            if byte_swapped(order) {
                w.swap_bytes()
            } else {
                w
            }
        })
        .collect();
    if words_reversed(order) {
        words.reverse();
    }
    words
}

/// Decode from the words (registers areas) read starting at spec.address; `words.len() >= count`.
pub fn decode_registers(spec: &PointSpec, words: &[u16]) -> Result<Value, String> {
    if spec.area.is_bits() {
        return Err(format!("a {:?} holds bits, not registers", spec.area));
    }
    let n = usize::from(spec.ty.registers(Some(spec.count)).max(1));
    let Some(words) = words.get(..n) else {
        return Err(format!("{:?} needs {n} registers, got {}", spec.ty, words.len()));
    };
    let raw = words_to_raw(words, spec.order);
    let (scale, offset) = (spec.scale, spec.offset);
    let signed = |v: i64| if spec.is_scaled() { Value::Float(v as f64 * scale + offset) } else { Value::Int(v) };
    let unsigned = |v: u64| if spec.is_scaled() { Value::Float(v as f64 * scale + offset) } else { Value::UInt(v) };
    let float = |v: f64| Value::Float(if spec.is_scaled() { v * scale + offset } else { v });
    Ok(match spec.ty {
        PointType::Bool => {
            let bit = spec.bit.unwrap_or(0);
            if bit > 15 {
                return Err(format!("bit {bit} is outside a 16-bit register"));
            }
            Value::Bool((words[0] >> bit) & 1 == 1)
        }
        PointType::U16 | PointType::U32 | PointType::U64 => unsigned(raw),
        PointType::I16 => signed(i64::from(raw as u16 as i16)),
        PointType::I32 => signed(i64::from(raw as u32 as i32)),
        PointType::I64 => signed(raw as i64),
        PointType::F32 => float(f64::from(f32::from_bits(raw as u32))),
        PointType::F64 => float(f64::from_bits(raw)),
        PointType::String => Value::Text(decode_text(words, spec.order)?),
    })
}

fn decode_text(words: &[u16], order: WordOrder) -> Result<String, String> {
    let bytes: Vec<u8> =
        words.iter().flat_map(|w| if byte_swapped(order) { w.to_le_bytes() } else { w.to_be_bytes() }).collect();
    let end = bytes.iter().rposition(|&b| b != 0 && b != b' ').map_or(0, |i| i + 1);
    let text = &bytes[..end];
    if let Some((i, b)) = text.iter().enumerate().find(|(_, b)| !b.is_ascii() || (b.is_ascii_control() && **b != b'\t'))
    {
        return Err(format!("byte 0x{b:02X} at position {i} is not printable ASCII (check `length` and `order`)"));
    }
    Ok(text.iter().map(|&b| char::from(b)).collect())
}

/// Bits areas.
pub fn decode_bit(_spec: &PointSpec, bit: bool) -> Value {
    Value::Bool(bit)
}

/// Encode an engineering value for writing: inverse of scale/offset, range-checked against the type.
///
/// An integer type takes a value that, after unscaling, is within 1e-9 of an integer; the result is
/// then checked against the type's range. A bool that is one bit of a register is refused: the caller
/// must read the register, change the bit and write the register back. Strings are ASCII, padded with
/// NULs to `count` registers.
pub fn encode_registers(spec: &PointSpec, value: &serde_json::Value) -> Result<Vec<u16>, String> {
    if spec.area.is_bits() {
        return Err(format!("a {:?} holds bits, not registers; encode it with encode_bit", spec.area));
    }
    let n = spec.ty.registers(Some(spec.count)).max(1);
    let raw = match spec.ty {
        PointType::Bool => {
            return Err(format!(
                "bit {} of a register cannot be written on its own: read the register, set or clear the bit \
                 and write the whole register back (read-modify-write)",
                spec.bit.unwrap_or(0)
            ))
        }
        PointType::String => return encode_text(spec, value),
        PointType::F32 | PointType::F64 => {
            let raw = unscale(spec, number(value)?)?;
            if spec.ty == PointType::F64 {
                raw.to_bits()
            } else if raw.is_finite() && raw.abs() > f64::from(f32::MAX) {
                return Err(format!("{raw} is out of range for f32 (±{:e})", f32::MAX));
            } else {
                u64::from((raw as f32).to_bits())
            }
        }
        ty => {
            let (min, max) = int_range(ty);
            let (eng, raw) = match value.as_i64().map(i128::from).or_else(|| value.as_u64().map(i128::from)) {
                Some(i) if !spec.is_scaled() => (i as f64, i),
                _ => {
                    let eng = number(value)?;
                    let raw = unscale(spec, eng)?;
                    let rounded = raw.round();
                    if !rounded.is_finite() || (raw - rounded).abs() > 1e-9 {
                        return Err(format!("{eng} gives raw value {raw}, which is not an integer as {ty:?} needs"));
                    }
                    (eng, rounded as i128) // saturates, so still out of range below
                }
            };
            if raw < min || raw > max {
                let ty = format!("{ty:?}").to_lowercase();
                return Err(if spec.is_scaled() {
                    format!("{eng} (raw {raw} after scale/offset) is out of range for {ty} ({min}..={max})")
                } else {
                    format!("{raw} is out of range for {ty} ({min}..={max})")
                });
            }
            raw as u64 // two's complement; raw_to_words keeps the low bits
        }
    };
    Ok(raw_to_words(raw, n, spec.order))
}

fn number(value: &serde_json::Value) -> Result<f64, String> {
    value.as_f64().ok_or_else(|| format!("expected a number, got {value}"))
}

fn unscale(spec: &PointSpec, eng: f64) -> Result<f64, String> {
    if spec.scale == 0.0 || !spec.scale.is_finite() {
        return Err(format!("scale {} cannot be inverted", spec.scale));
    }
    Ok((eng - spec.offset) / spec.scale)
}

fn int_range(ty: PointType) -> (i128, i128) {
    match ty {
        PointType::U16 => (0, u16::MAX.into()),
        PointType::I16 => (i16::MIN.into(), i16::MAX.into()),
        PointType::U32 => (0, u32::MAX.into()),
        PointType::I32 => (i32::MIN.into(), i32::MAX.into()),
        PointType::U64 => (0, u64::MAX.into()),
        _ => (i64::MIN.into(), i64::MAX.into()),
    }
}

fn encode_text(spec: &PointSpec, value: &serde_json::Value) -> Result<Vec<u16>, String> {
    let Some(text) = value.as_str() else { return Err(format!("expected a string, got {value}")) };
    if let Some(c) = text.chars().find(|c| !c.is_ascii() || (c.is_ascii_control() && *c != '\t')) {
        return Err(format!("{c:?} is not printable ASCII; a string point holds ASCII only"));
    }
    let capacity = usize::from(spec.count) * 2;
    if text.len() > capacity {
        return Err(format!(
            "{} characters do not fit in {} registers ({capacity} characters)",
            text.len(),
            spec.count
        ));
    }
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(capacity, 0);
    Ok(bytes
        .chunks(2)
        .map(
            |c| {
                if byte_swapped(spec.order) {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            },
        )
        .collect())
}

/// A value for a coil: `true`/`false`, `0`/`1`, or `"on"`/`"off"` (also `"true"`/`"false"`, `"1"`/`"0"`).
pub fn encode_bit(value: &serde_json::Value) -> Result<bool, String> {
    match value {
        serde_json::Value::Bool(b) => Ok(*b),
        serde_json::Value::Number(n) if n.as_f64() == Some(0.0) => Ok(false),
        serde_json::Value::Number(n) if n.as_f64() == Some(1.0) => Ok(true),
        serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" => Ok(true),
            "off" | "false" | "0" => Ok(false),
            _ => Err(format!("expected on/off, true/false or 1/0, got {value}")),
        },
        _ => Err(format!("expected on/off, true/false or 1/0, got {value}")),
    }
}

/// One read request covering several points.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadBlock {
    pub area: PointArea,
    pub start: u16,
    pub count: u16,
    /// indices into the input slice
    pub points: Vec<usize>,
}

/// Merge points of ONE device into as few reads as possible.
///
/// Points of the same area are sorted by address; a point joins the current block when the hole
/// between them is at most `max_gap` addresses and the merged request stays within the protocol
/// limit (125 registers, 2000 bits). A point is never split across blocks and no block reaches past
/// address 65535. A point that cannot be read in one request at all (only possible when validation
/// was bypassed) gets a block of its own with its true extent, so the read fails and says so rather
/// than the point silently never being read. Blocks come out ordered by area, then start.
pub fn plan_reads(points: &[PointSpec], max_gap: u16) -> Vec<ReadBlock> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].area, points[i].address, points[i].count));
    let mut blocks: Vec<ReadBlock> = Vec::new();
    // End (exclusive) of the last block, in u32 so that 65535 + 1 does not overflow, and whether
    // it may take more points.
    let (mut end, mut open) = (0u32, false);
    for i in order {
        let p = &points[i];
        let count = if p.area.is_bits() { 1 } else { p.count.max(1) };
        let (p_start, p_end) = (u32::from(p.address), u32::from(p.address) + u32::from(count));
        let limit = u32::from(if p.area.is_bits() { MAX_READ_BITS } else { MAX_READ_REGISTERS });
        let fits = p_end <= 0x1_0000 && u32::from(count) <= limit;
        if let Some(b) = blocks.last_mut().filter(|b| open && fits && b.area == p.area) {
            let merged_end = end.max(p_end);
            if p_start.saturating_sub(end) <= u32::from(max_gap) && merged_end - u32::from(b.start) <= limit {
                end = merged_end;
                b.count = (end - u32::from(b.start)) as u16;
                b.points.push(i);
                continue;
            }
        }
        blocks.push(ReadBlock { area: p.area, start: p.address, count, points: vec![i] });
        (end, open) = (p_end, fits);
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use WordOrder::{ABCD, BADC, CDAB, DCBA};

    const ORDERS: [WordOrder; 4] = [ABCD, BADC, CDAB, DCBA];

    fn spec(ty: PointType, order: WordOrder) -> PointSpec {
        let count = ty.registers(Some(1));
        PointSpec {
            area: PointArea::HoldingRegister,
            address: 0,
            ty,
            bit: None,
            count,
            order,
            scale: 1.0,
            offset: 0.0,
            limits: None,
        }
    }

    fn scaled(ty: PointType, scale: f64, offset: f64) -> PointSpec {
        PointSpec { scale, offset, ..spec(ty, ABCD) }
    }

    fn text(count: u16, order: WordOrder) -> PointSpec {
        PointSpec { count, ..spec(PointType::String, order) }
    }

    fn at(area: PointArea, address: u16, ty: PointType) -> PointSpec {
        PointSpec { area, address, ..spec(ty, ABCD) }
    }

    fn reg(address: u16, ty: PointType) -> PointSpec {
        at(PointArea::HoldingRegister, address, ty)
    }

    /// Decodes `words` and checks that encoding the decoded value gives the same words back.
    fn round_trip(spec: &PointSpec, words: &[u16]) -> Value {
        let v = decode_registers(spec, words).unwrap();
        assert_eq!(encode_registers(spec, &v.to_json()).unwrap(), words, "{spec:?} {v:?}");
        v
    }

    #[test]
    fn f32_in_all_four_orders() {
        let vectors = [[0x42F6, 0xE979], [0xF642, 0x79E9], [0xE979, 0x42F6], [0x79E9, 0xF642]];
        for (order, words) in ORDERS.into_iter().zip(vectors) {
            let s = spec(PointType::F32, order);
            assert_eq!(decode_registers(&s, &words).unwrap(), Value::Float(f64::from(123.456f32)), "{order:?}");
            assert_eq!(encode_registers(&s, &json!(123.456)).unwrap(), words, "{order:?}");
        }
    }

    #[test]
    fn u32_and_i32_in_all_four_orders() {
        let vectors = [[0x1234, 0x5678], [0x3412, 0x7856], [0x5678, 0x1234], [0x7856, 0x3412]];
        for (order, words) in ORDERS.into_iter().zip(vectors) {
            assert_eq!(round_trip(&spec(PointType::U32, order), &words), Value::UInt(0x1234_5678), "{order:?}");
            assert_eq!(round_trip(&spec(PointType::I32, order), &words), Value::Int(0x1234_5678), "{order:?}");
        }
        assert_eq!(round_trip(&spec(PointType::I32, CDAB), &[0xFFFE, 0xFFFF]), Value::Int(-2));
        assert_eq!(round_trip(&spec(PointType::U32, CDAB), &[0xFFFE, 0xFFFF]), Value::UInt(0xFFFF_FFFE));
    }

    #[test]
    fn sixteen_bit_types_swap_bytes_only_under_badc_and_dcba() {
        for (order, word) in [(ABCD, 0xFFFE), (CDAB, 0xFFFE), (BADC, 0xFEFF), (DCBA, 0xFEFF)] {
            assert_eq!(round_trip(&spec(PointType::I16, order), &[word]), Value::Int(-2), "{order:?}");
        }
        for (order, word) in [(ABCD, 0x1234), (CDAB, 0x1234), (BADC, 0x3412), (DCBA, 0x3412)] {
            assert_eq!(round_trip(&spec(PointType::U16, order), &[word]), Value::UInt(0x1234), "{order:?}");
        }
        assert_eq!(round_trip(&spec(PointType::I16, ABCD), &[0x8000]), Value::Int(-32768));
        assert_eq!(round_trip(&spec(PointType::U16, ABCD), &[0x8000]), Value::UInt(32768));
    }

    #[test]
    fn sixty_four_bit_types() {
        let be = [0x0102, 0x0304, 0x0506, 0x0708];
        let vectors =
            [be, [0x0201, 0x0403, 0x0605, 0x0807], [0x0708, 0x0506, 0x0304, 0x0102], [0x0807, 0x0605, 0x0403, 0x0201]];
        for (order, words) in ORDERS.into_iter().zip(vectors) {
            assert_eq!(
                round_trip(&spec(PointType::U64, order), &words),
                Value::UInt(0x0102_0304_0506_0708),
                "{order:?}"
            );
            assert_eq!(
                round_trip(&spec(PointType::I64, order), &words),
                Value::Int(0x0102_0304_0506_0708),
                "{order:?}"
            );
        }
        let n: i64 = -1_234_567_890_123;
        let abcd = [0xFFFF, 0xFEE0, 0x8E04, 0xFB35]; // 0xFFFFFEE08E04FB35
        let cdab = [0xFB35, 0x8E04, 0xFEE0, 0xFFFF];
        assert_eq!(round_trip(&spec(PointType::I64, ABCD), &abcd), Value::Int(n));
        assert_eq!(round_trip(&spec(PointType::I64, CDAB), &cdab), Value::Int(n));
        assert_eq!(round_trip(&spec(PointType::U64, ABCD), &[0xFFFF; 4]), Value::UInt(u64::MAX));
        assert_eq!(round_trip(&spec(PointType::I64, ABCD), &[0x8000, 0, 0, 0]), Value::Int(i64::MIN));

        let pi = [0x4009, 0x21FB, 0x5444, 0x2D18]; // 0x400921FB54442D18
        assert_eq!(round_trip(&spec(PointType::F64, ABCD), &pi), Value::Float(std::f64::consts::PI));
        assert_eq!(
            round_trip(&spec(PointType::F64, CDAB), &[0x2D18, 0x5444, 0x21FB, 0x4009]),
            Value::Float(std::f64::consts::PI)
        );
        assert_eq!(
            round_trip(&spec(PointType::F64, DCBA), &[0x182D, 0x4454, 0xFB21, 0x0940]),
            Value::Float(std::f64::consts::PI)
        );
        assert_eq!(decode_registers(&spec(PointType::F64, ABCD), &[0xC000, 0, 0, 0]).unwrap(), Value::Float(-2.0));
    }

    #[test]
    fn decode_uses_only_the_first_count_words_and_needs_enough() {
        let s = spec(PointType::U32, ABCD);
        assert_eq!(decode_registers(&s, &[0, 7, 0xFFFF]).unwrap(), Value::UInt(7));
        let err = decode_registers(&s, &[7]).unwrap_err();
        assert!(err.contains("needs 2 registers, got 1"), "{err}");
        assert!(decode_registers(&at(PointArea::Coil, 0, PointType::Bool), &[1]).is_err());
    }

    #[test]
    fn strings() {
        let words = [0x4845, 0x4C4C, 0x4F20, 0x0000];
        assert_eq!(decode_registers(&text(4, ABCD), &words).unwrap(), Value::Text("HELLO".into()));
        assert_eq!(decode_registers(&text(4, CDAB), &words).unwrap(), Value::Text("HELLO".into()));
        let swapped = [0x4548, 0x4C4C, 0x204F, 0x0000];
        assert_eq!(decode_registers(&text(4, BADC), &swapped).unwrap(), Value::Text("HELLO".into()));
        assert_eq!(decode_registers(&text(4, DCBA), &swapped).unwrap(), Value::Text("HELLO".into()));
        assert_eq!(decode_registers(&text(2, ABCD), &[0, 0]).unwrap(), Value::Text(String::new()));
        assert_eq!(decode_registers(&text(2, ABCD), &[0x2041, 0x2020]).unwrap(), Value::Text(" A".into()));

        assert_eq!(encode_registers(&text(4, ABCD), &json!("HELLO")).unwrap(), [0x4845, 0x4C4C, 0x4F00, 0]);
        assert_eq!(encode_registers(&text(4, BADC), &json!("HELLO")).unwrap(), [0x4548, 0x4C4C, 0x004F, 0]);
        assert_eq!(encode_registers(&text(2, ABCD), &json!("ABCD")).unwrap(), [0x4142, 0x4344]);

        let err = decode_registers(&text(2, ABCD), &[0xC3A9, 0]).unwrap_err();
        assert!(err.contains("0xC3"), "{err}");
        assert!(decode_registers(&text(2, ABCD), &[0x4100, 0x4200]).is_err(), "NUL inside the text");
        let err = encode_registers(&text(2, ABCD), &json!("ABCDE")).unwrap_err();
        assert!(err.contains("5 characters") && err.contains("2 registers"), "{err}");
        assert!(encode_registers(&text(2, ABCD), &json!("é")).is_err());
        assert!(encode_registers(&text(2, ABCD), &json!(12)).is_err());
        assert_eq!(decode_registers(&text(1, ABCD), &[0x4142, 0x4344]).unwrap(), Value::Text("AB".into()));
    }

    #[test]
    fn bits_of_a_register() {
        let word = 0b1000_0000_0000_0101;
        for order in ORDERS {
            let bit =
                |b: u8| decode_registers(&PointSpec { bit: Some(b), ..spec(PointType::Bool, order) }, &[word]).unwrap();
            assert_eq!([bit(0), bit(1), bit(2), bit(14), bit(15)], [true, false, true, false, true].map(Value::Bool));
        }
        let bad = PointSpec { bit: Some(16), ..spec(PointType::Bool, ABCD) };
        assert!(decode_registers(&bad, &[0xFFFF]).is_err());
        let err =
            encode_registers(&PointSpec { bit: Some(3), ..spec(PointType::Bool, ABCD) }, &json!(true)).unwrap_err();
        assert!(err.contains("read-modify-write") && err.contains("bit 3"), "{err}");
    }

    #[test]
    fn coils_and_discrete_inputs() {
        let coil = at(PointArea::Coil, 3, PointType::Bool);
        assert_eq!(decode_bit(&coil, true), Value::Bool(true));
        assert_eq!(decode_bit(&coil, false), Value::Bool(false));
        for (v, b) in
            [(json!(true), true), (json!(0), false), (json!(1), true), (json!("on"), true), (json!("OFF"), false)]
        {
            assert_eq!(encode_bit(&v), Ok(b), "{v}");
        }
        for v in [json!(2), json!("maybe"), json!(null), json!([true]), json!(0.5)] {
            assert!(encode_bit(&v).is_err(), "{v}");
        }
        assert!(encode_registers(&coil, &json!(true)).is_err());
    }

    #[test]
    fn scale_and_offset() {
        let s = scaled(PointType::U16, 0.1, -10.0);
        assert_eq!(decode_registers(&s, &[235]).unwrap(), Value::Float(13.5));
        assert_eq!(encode_registers(&s, &json!(13.5)).unwrap(), [235]);
        let s = scaled(PointType::I16, 0.01, 0.0);
        assert_eq!(encode_registers(&s, &json!(-1.23)).unwrap(), [0xFF85]);
        for raw in [0u16, 1, 99, 0x7FFF, 0x8000, 0xFFFF] {
            let v = decode_registers(&s, &[raw]).unwrap();
            assert!(matches!(v, Value::Float(_)));
            assert_eq!(encode_registers(&s, &v.to_json()).unwrap(), [raw], "{v:?}");
        }
        let s = scaled(PointType::U32, 0.1, 0.0);
        assert_eq!(encode_registers(&s, &json!(0.1 + 0.2)).unwrap(), [0, 3], "within 1e-9 of an integer");
        let s = scaled(PointType::F32, 2.0, 1.0);
        assert_eq!(decode_registers(&s, &[0x4000, 0]).unwrap(), Value::Float(5.0));
        assert_eq!(encode_registers(&s, &json!(5)).unwrap(), [0x4000, 0]);
        // Offset alone also makes the value a float.
        assert_eq!(decode_registers(&scaled(PointType::I16, 1.0, 0.5), &[0xFFFF]).unwrap(), Value::Float(-0.5));
    }

    #[test]
    fn out_of_range_and_inexact_writes_are_refused() {
        let err = encode_registers(&spec(PointType::U16, ABCD), &json!(70000)).unwrap_err();
        assert!(err.contains("70000") && err.contains("0..=65535"), "{err}");
        let err = encode_registers(&spec(PointType::I16, ABCD), &json!(40000)).unwrap_err();
        assert!(err.contains("-32768..=32767"), "{err}");
        assert!(encode_registers(&spec(PointType::U16, ABCD), &json!(-1)).is_err());
        assert!(encode_registers(&spec(PointType::U32, ABCD), &json!(4_294_967_296u64)).is_err());
        assert!(encode_registers(&spec(PointType::I64, ABCD), &json!(u64::MAX)).is_err());
        assert!(encode_registers(&spec(PointType::U64, ABCD), &json!(1e20)).is_err());
        assert_eq!(encode_registers(&spec(PointType::U64, ABCD), &json!(u64::MAX)).unwrap(), [0xFFFF; 4]);
        assert_eq!(encode_registers(&spec(PointType::U16, ABCD), &json!(7.0)).unwrap(), [7]);

        let err = encode_registers(&scaled(PointType::U16, 0.1, 0.0), &json!(7000)).unwrap_err();
        assert!(err.contains("raw 70000") && err.contains("0..=65535"), "{err}");
        let err = encode_registers(&spec(PointType::U16, ABCD), &json!(1.5)).unwrap_err();
        assert!(err.contains("not an integer"), "{err}");
        assert!(encode_registers(&scaled(PointType::U16, 0.1, 0.0), &json!(0.15)).is_err());
        assert!(encode_registers(&spec(PointType::U32, ABCD), &json!(5.0001)).is_err());
        assert!(encode_registers(&scaled(PointType::I32, 0.1, 0.0), &json!(0.3000001)).is_err());
        assert!(encode_registers(&spec(PointType::F32, ABCD), &json!(1e39)).is_err());
        assert!(encode_registers(&spec(PointType::F64, ABCD), &json!(1e39)).is_ok());
        assert!(encode_registers(&spec(PointType::U16, ABCD), &json!("12")).is_err());
        assert!(encode_registers(&scaled(PointType::U16, 0.0, 0.0), &json!(1)).is_err());
    }

    #[test]
    fn values_as_numbers_and_json() {
        assert_eq!(Value::Int(-3).as_f64(), Some(-3.0));
        assert_eq!(Value::Bool(true).as_f64(), Some(1.0));
        assert_eq!(Value::Text("1".into()).as_f64(), None);
        assert_eq!(Value::Float(f64::NAN).to_json(), serde_json::Value::Null);
        assert_eq!(Value::UInt(u64::MAX).to_json(), json!(u64::MAX));
        assert_eq!(serde_json::to_string(&Value::Float(1.5)).unwrap(), "1.5");
        assert_eq!(serde_json::to_string(&Value::Text("a".into())).unwrap(), "\"a\"");
    }

    #[test]
    fn from_config_resolves_defaults() {
        let dev: ModbusDeviceConfig =
            serde_json::from_value(json!({"tcp": "plc:502", "addressing": "one-based", "order": "CDAB"})).unwrap();
        let point = |v: serde_json::Value| -> PointConfig { serde_json::from_value(v).unwrap() };
        let p =
            point(json!({"device": "plc", "area": "holding-register", "address": 40, "type": "f32", "poll": "100ms"}));
        let s = PointSpec::from_config(&p, &dev);
        assert_eq!(s, PointSpec { address: 39, order: CDAB, ..reg(0, PointType::F32) });
        let p = point(json!({"device": "plc", "area": "input-register", "address": 1, "type": "string", "length": 8,
            "order": "BADC", "scale": 2.0, "poll": "100ms"}));
        let s = PointSpec::from_config(&p, &dev);
        assert_eq!(
            (s.area, s.address, s.count, s.order, s.scale, s.offset),
            (PointArea::InputRegister, 0, 8, BADC, 2.0, 0.0)
        );
        let p = point(json!({"device": "plc", "area": "coil", "address": 5, "poll": "100ms"}));
        let s = PointSpec::from_config(&p, &dev);
        assert_eq!((s.ty, s.count, s.address), (PointType::Bool, 1, 4));
        let p = point(
            json!({"device": "plc", "area": "holding-register", "address": 3, "type": "bool", "bit": 7, "poll": "100ms"}),
        );
        assert_eq!(PointSpec::from_config(&p, &dev).bit, Some(7));
    }

    fn blocks(points: &[PointSpec], gap: u16) -> Vec<(PointArea, u16, u16, Vec<usize>)> {
        plan_reads(points, gap).into_iter().map(|b| (b.area, b.start, b.count, b.points)).collect()
    }

    #[test]
    fn plan_merges_neighbours_and_splits_on_gaps() {
        use PointArea::HoldingRegister as H;
        use PointType::{F32, U16, U32};
        // Unsorted input; indices refer to it.
        let pts = [reg(2, U32), reg(0, U16), reg(1, U16)];
        assert_eq!(blocks(&pts, 0), [(H, 0, 4, vec![1, 2, 0])]);
        let pts = [reg(0, U16), reg(4, F32), reg(10, U16)];
        assert_eq!(blocks(&pts, 3), [(H, 0, 6, vec![0, 1]), (H, 10, 1, vec![2])]);
        assert_eq!(blocks(&pts, 4), [(H, 0, 11, vec![0, 1, 2])]);
        assert_eq!(blocks(&pts, 2), [(H, 0, 1, vec![0]), (H, 4, 2, vec![1]), (H, 10, 1, vec![2])]);
        // Overlapping points (a bit of a register inside a u32) share the read.
        let bit = PointSpec { bit: Some(3), ..reg(11, PointType::Bool) };
        assert_eq!(blocks(&[reg(10, U32), bit], 0), [(H, 10, 2, vec![0, 1])]);
        assert!(plan_reads(&[], 10).is_empty());
    }

    #[test]
    fn plan_respects_the_register_limit_without_splitting_points() {
        use PointArea::HoldingRegister as H;
        // 63 u32 at 0, 2, .., 124 span 126 registers: one too many.
        let pts: Vec<PointSpec> = (0..63).map(|i| reg(2 * i, PointType::U32)).collect();
        let b = plan_reads(&pts, 0);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].start, b[0].count, b[0].points.len()), (0, 124, 62));
        assert_eq!((b[1].start, b[1].count, b[1].points.clone()), (124, 2, vec![62]));
        // A 4-register value at 122 would reach 126: it moves whole into the next block.
        let pts = [reg(0, PointType::U16), reg(122, PointType::F64)];
        assert_eq!(blocks(&pts, 200), [(H, 0, 1, vec![0]), (H, 122, 4, vec![1])]);
        let pts = [reg(0, PointType::U16), reg(121, PointType::F64)];
        assert_eq!(blocks(&pts, 200), [(H, 0, 125, vec![0, 1])]);
        // A whole 125-register string is one request.
        let pts = [text(125, ABCD), reg(125, PointType::U16)];
        assert_eq!(blocks(&pts, 0), [(H, 0, 125, vec![0]), (H, 125, 1, vec![1])]);
    }

    #[test]
    fn plan_respects_the_bit_limit_and_areas() {
        use PointArea::{Coil, DiscreteInput, HoldingRegister, InputRegister};
        let coil = |a| at(Coil, a, PointType::Bool);
        assert_eq!(blocks(&[coil(0), coil(1999)], 2000), [(Coil, 0, 2000, vec![0, 1])]);
        assert_eq!(blocks(&[coil(0), coil(2000)], 2000), [(Coil, 0, 1, vec![0]), (Coil, 2000, 1, vec![1])]);
        assert_eq!(blocks(&[coil(5), coil(5)], 0), [(Coil, 5, 1, vec![0, 1])]);
        let pts = [
            at(InputRegister, 1, PointType::U16),
            at(DiscreteInput, 0, PointType::Bool),
            at(HoldingRegister, 0, PointType::U16),
            coil(0),
            at(InputRegister, 0, PointType::U16),
        ];
        assert_eq!(
            blocks(&pts, 100),
            [
                (Coil, 0, 1, vec![3]),
                (DiscreteInput, 0, 1, vec![1]),
                (InputRegister, 0, 2, vec![4, 0]),
                (HoldingRegister, 0, 1, vec![2])
            ]
        );
    }

    #[test]
    fn plan_never_crosses_the_top_of_the_address_space() {
        use PointArea::HoldingRegister as H;
        let pts = [reg(65530, PointType::U16), reg(65534, PointType::U32)];
        assert_eq!(blocks(&pts, 10), [(H, 65530, 6, vec![0, 1])]);
        // A point past 65535 (validation bypassed) is read alone, so its failure is reported, and
        // nothing is merged into it.
        let pts = [reg(65534, PointType::U16), reg(65535, PointType::U32), reg(65535, PointType::U16)];
        assert_eq!(blocks(&pts, 10), [(H, 65534, 2, vec![0, 2]), (H, 65535, 2, vec![1])]);
    }
}
