//! Segment files: the record encoding and the recovery scan.
//!
//! A segment is a plain concatenation of records; nothing else is in the file (no header, no
//! footer), so a segment can be cut, concatenated or inspected with `xxd` by hand. All integers
//! are little-endian.
//!
//! ```text
//! offset size field
//!      0    2 magic        0x4C53 (bytes 53 4C, "SL")
//!      2    4 len          length of the body below (12 + topic_len + payload length)
//!      6    4 crc32        CRC-32 (IEEE) of the body
//!     10    8 seq          body starts here
//!     18    1 qos          0, 1 or 2
//!     19    1 retain       0 or 1
//!     20    2 topic_len
//!     22    n topic        UTF-8
//!   22+n    m payload      the rest of the body
//! ```

use std::ops::Range;

/// Record magic, first two bytes of every record.
pub const MAGIC: u16 = 0x4C53;
/// magic + len + crc.
pub const HEADER_LEN: usize = 10;
/// seq + qos + retain + topic_len.
pub const FIXED_BODY_LEN: usize = 12;
/// Largest body the scanner accepts (a damaged `len` must not make it read far).
pub const MAX_BODY_LEN: usize = 1 << 30;

const MAGIC_BYTES: [u8; 2] = MAGIC.to_le_bytes();

/// File name of the segment whose first record has sequence number `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The first sequence number encoded in a segment file name, or `None` if it is not one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encoded size of a record with this topic and payload.
pub fn encoded_len(topic_len: usize, payload_len: usize) -> u64 {
    (HEADER_LEN + FIXED_BODY_LEN) as u64 + topic_len as u64 + payload_len as u64
}

/// Appends one encoded record to `buf`. The caller checked the topic length fits in a u16 and
/// the whole record in a segment.
pub fn encode(buf: &mut Vec<u8>, seq: u64, topic: &str, payload: &[u8], qos: u8, retain: bool) {
    let body_len = FIXED_BODY_LEN + topic.len() + payload.len();
    let start = buf.len();
    buf.extend_from_slice(&MAGIC_BYTES);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]); // crc, filled in below
    let body_start = buf.len();
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.push(qos);
    buf.push(u8::from(retain));
    buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(topic.as_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[body_start..]);
    buf[start + 6..start + 10].copy_from_slice(&crc.to_le_bytes());
}

/// One record decoded in place.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub seq: u64,
    pub qos: u8,
    pub retain: bool,
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// Encoded length, header included.
    pub len: usize,
}

fn u16_at(buf: &[u8], pos: usize) -> u16 {
    u16::from_le_bytes([buf[pos], buf[pos + 1]])
}

fn u32_at(buf: &[u8], pos: usize) -> u32 {
    u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]])
}

/// Decodes the record starting at `pos`, or `None` if the bytes there are not a whole valid
/// record (magic, length, CRC, field ranges).
pub fn decode_at(buf: &[u8], pos: usize) -> Option<Decoded<'_>> {
    let rest = buf.get(pos..)?;
    if rest.len() < HEADER_LEN + FIXED_BODY_LEN || u16_at(rest, 0) != MAGIC {
        return None;
    }
    let body_len = u32_at(rest, 2) as usize;
    if !(FIXED_BODY_LEN..=MAX_BODY_LEN).contains(&body_len) || rest.len() - HEADER_LEN < body_len {
        return None;
    }
    let body = &rest[HEADER_LEN..HEADER_LEN + body_len];
    if crc32fast::hash(body) != u32_at(rest, 6) {
        return None;
    }
    let seq = u64::from_le_bytes(body[0..8].try_into().ok()?);
    let (qos, retain) = (body[8], body[9]);
    let topic_len = u16_at(body, 10) as usize;
    if qos > 2 || retain > 1 || FIXED_BODY_LEN + topic_len > body_len {
        return None;
    }
    let topic = std::str::from_utf8(&body[FIXED_BODY_LEN..FIXED_BODY_LEN + topic_len]).ok()?;
    Some(Decoded {
        seq,
        qos,
        retain: retain == 1,
        topic,
        payload: &body[FIXED_BODY_LEN + topic_len..],
        len: HEADER_LEN + body_len,
    })
}

/// Where one valid record lies in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub offset: u32,
    pub len: u32,
}

/// What the scan of one segment found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Valid records, in file order, with strictly increasing sequence numbers.
    pub entries: Vec<Entry>,
    /// Byte ranges that are not valid records (damage, or a torn tail).
    pub damaged: Vec<Range<usize>>,
    /// End of the last valid record (0 if none).
    pub valid_end: usize,
}

/// Scans a whole segment. A record is accepted only if it is valid and its sequence number is
/// greater than `after` and than every record accepted before it, and at most
/// [`super::MAX_SEQ`]. After damage the scan
/// resynchronises on the next offset holding a valid record, so intact records behind a damaged
/// one are kept.
pub fn scan(buf: &[u8], after: u64) -> Scan {
    scan_range(buf, after, super::MAX_SEQ)
}

/// [`scan`], accepting sequence numbers up to `max` (records numbered above it are damage).
pub fn scan_range(buf: &[u8], after: u64, max: u64) -> Scan {
    let mut out = Scan::default();
    let mut last = after;
    let mut pos = 0;
    let accept = |p: usize, last: u64| decode_at(buf, p).filter(|d| d.seq > last && d.seq <= max);
    while pos < buf.len() {
        if let Some(d) = accept(pos, last) {
            out.entries.push(Entry { seq: d.seq, offset: pos as u32, len: d.len as u32 });
            last = d.seq;
            pos += d.len;
            out.valid_end = pos;
            continue;
        }
        let start = pos;
        let mut next = buf.len();
        let mut p = pos + 1;
        while p + 1 < buf.len() {
            if buf[p..p + 2] == MAGIC_BYTES && accept(p, last).is_some() {
                next = p;
                break;
            }
            p += 1;
        }
        out.damaged.push(start..next);
        pos = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        encode(&mut b, seq, "t/x", payload, 1, false);
        b
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000042.tmp"), None);
    }

    #[test]
    fn encode_decode_round_trip() {
        let b = rec(7, b"hello");
        assert_eq!(b.len() as u64, encoded_len(3, 5));
        let d = decode_at(&b, 0).unwrap();
        assert_eq!((d.seq, d.qos, d.retain, d.topic, d.payload, d.len), (7, 1, false, "t/x", &b"hello"[..], b.len()));
    }

    #[test]
    fn scan_resynchronises_after_damage() {
        let mut buf = Vec::new();
        for s in 1..=3 {
            buf.extend(rec(s, b"payload"));
        }
        let second = rec(1, b"payload").len();
        buf[second + 12] ^= 0xff; // inside record 2
        let scan = scan(&buf, 0);
        let seqs: Vec<u64> = scan.entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 3]);
        assert_eq!(scan.damaged, vec![second..2 * second]);
        assert_eq!(scan.valid_end, buf.len());
    }

    #[test]
    fn scan_reports_torn_tail() {
        let mut buf = rec(1, b"a");
        let whole = buf.len();
        buf.extend_from_slice(&rec(2, b"bbbb")[..9]);
        let scan = scan(&buf, 0);
        assert_eq!(scan.entries.len(), 1);
        assert_eq!(scan.valid_end, whole);
        assert_eq!(scan.damaged, vec![whole..buf.len()]);
    }
}
