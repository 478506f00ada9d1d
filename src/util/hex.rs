//! Lower-case hex, for key files, signatures and SHA-256 digests (no crate for forty lines).

/// `bytes` as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The bytes of hex `text` (either case; surrounding white space, such as a key file's final
/// newline, is ignored). The error says what is wrong with the text, for the caller to name the file.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let t = text.trim().as_bytes();
    if t.len() % 2 != 0 {
        return Err(format!("{} hex digits, an odd number", t.len()));
    }
    let nibble = |c: u8, at: usize| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("`{}` at character {} is not a hex digit", c.escape_ascii(), at + 1)),
    };
    t.chunks(2).enumerate().map(|(i, pair)| Ok(nibble(pair[0], 2 * i)? << 4 | nibble(pair[1], 2 * i + 1)?)).collect()
}

/// The `N` bytes of hex `text`, or why it is not `N` bytes of hex.
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], String> {
    let v = decode(text)?;
    v.as_slice().try_into().map_err(|_| format!("{} bytes of hex, expected {N} ({} hex digits)", v.len(), 2 * N))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(encode(&bytes), "0001abff");
        assert_eq!(decode("0001ABff\n").unwrap(), bytes);
        assert!(decode("abc").unwrap_err().contains("odd"));
        assert!(decode("zz").unwrap_err().contains("character 1"));
        assert_eq!(decode_array::<4>("0001abff").unwrap(), bytes);
        assert!(decode_array::<32>("0001abff").unwrap_err().contains("expected 32"));
    }
}
