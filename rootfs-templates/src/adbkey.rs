//! adb's public keys as `adb_keys` files hold them (AOSP
//! `adb/crypto/rsa_2048_key.cpp`, `libcrypto_utils/android_pubkey.cpp`):
//! one key per line, `BASE64 user@host`, where the base64 is Android's
//! `RSAPublicKey` struct for a 2048-bit key:
//!
//! ```text
//! u32 len          modulus size in 32-bit words (64)
//! u32 n0inv        -1 / n[0] mod 2^32 (Montgomery; not needed to verify)
//! u32 n[len]       the modulus, little-endian words, least significant first
//! u32 rr[len]      R^2 mod n (Montgomery; not needed to verify)
//! u32 exponent     the public exponent (65537)
//! ```
//!
//! Shared by adbd (which verifies signatures with them) and cellsd (which
//! checks keys before `cellctl adb VP --authorize` stores them).

/// One authorized key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdbKey {
    /// The modulus, big-endian bytes.
    pub modulus: Vec<u8>,
    pub exponent: u32,
    /// What follows the base64 (`user@host`), may be empty.
    pub comment: String,
    /// The base64 text as given (what is stored).
    pub base64: String,
}

/// Modulus size of the keys adb makes (2048 bits).
pub const MODULUS_WORDS: usize = 64;
/// Size of the decoded struct.
pub const STRUCT_LEN: usize = 4 + 4 + MODULUS_WORDS * 4 * 2 + 4;

/// Standard base64 (RFC 4648, with padding; whitespace ignored).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    let mut pad = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pad += 1;
                continue;
            }
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        if pad > 0 {
            return None; // data after padding
        }
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Parse one line of an adb_keys file (or an `adbkey.pub`).
pub fn parse_line(line: &str) -> Result<AdbKey, String> {
    let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    let (b64, comment) = match line.split_once(char::is_whitespace) {
        Some((a, b)) => (a, b.trim()),
        None => (line, ""),
    };
    if b64.is_empty() {
        return Err("empty key".into());
    }
    let raw = base64_decode(b64).ok_or("the key is not valid base64")?;
    if raw.len() != STRUCT_LEN {
        return Err(format!(
            "the key decodes to {} bytes, not the {STRUCT_LEN} of an adb RSA-2048 public key",
            raw.len()
        ));
    }
    let word =
        |i: usize| u32::from_le_bytes([raw[i * 4], raw[i * 4 + 1], raw[i * 4 + 2], raw[i * 4 + 3]]);
    if word(0) as usize != MODULUS_WORDS {
        return Err(format!(
            "the key says it has {} modulus words, not {MODULUS_WORDS}",
            word(0)
        ));
    }
    // n[0..64] are words 2..66, least significant first.
    let mut modulus = Vec::with_capacity(MODULUS_WORDS * 4);
    for w in (0..MODULUS_WORDS).rev() {
        modulus.extend_from_slice(&word(2 + w).to_be_bytes());
    }
    let exponent = word(2 + 2 * MODULUS_WORDS);
    if modulus[0] & 0x80 == 0 || exponent < 3 || exponent % 2 == 0 {
        return Err("the key's modulus or exponent is not that of an RSA-2048 key".into());
    }
    Ok(AdbKey {
        modulus,
        exponent,
        comment: comment.to_string(),
        base64: b64.to_string(),
    })
}

/// Every valid key of an adb_keys file's text (bad lines are skipped).
pub fn parse_file(text: &str) -> Vec<AdbKey> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| parse_line(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key in Android's struct layout with a given modulus top byte.
    fn key_line(top: u8, comment: &str) -> String {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(MODULUS_WORDS as u32).to_le_bytes());
        raw.extend_from_slice(&0u32.to_le_bytes());
        for w in 0..MODULUS_WORDS {
            let v: u32 = if w == MODULUS_WORDS - 1 {
                (top as u32) << 24 | 1
            } else {
                w as u32 + 1
            };
            raw.extend_from_slice(&v.to_le_bytes());
        }
        raw.extend(std::iter::repeat_n(0u8, MODULUS_WORDS * 4));
        raw.extend_from_slice(&65537u32.to_le_bytes());
        format!("{} {comment}", base64_encode(&raw))
    }

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(base64_decode(&base64_encode(data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert!(base64_decode("Zm9v!").is_none());
        assert!(base64_decode("Zm==9v").is_none());
    }

    #[test]
    fn keys_parse_and_bad_ones_are_named() {
        let k = parse_line(&key_line(0xc0, "alice@host")).unwrap();
        assert_eq!(k.exponent, 65537);
        assert_eq!(k.comment, "alice@host");
        assert_eq!(k.modulus.len(), 256);
        assert_eq!(k.modulus[0], 0xc0, "most significant byte first");
        assert_eq!(k.modulus[255], 1);
        let e = parse_line("bm90IGEga2V5 x@y").unwrap_err();
        assert!(e.contains("not the 524"), "{e}");
        assert!(parse_line("%%%").unwrap_err().contains("base64"));
        assert!(
            parse_line(&key_line(0x01, "")).is_err(),
            "not a 2048-bit modulus"
        );
        let file = format!(
            "# a comment\n{}\ngarbage\n\n{}\n",
            key_line(0xc0, "a"),
            key_line(0xd0, "b")
        );
        assert_eq!(parse_file(&file).len(), 2);
    }
}
