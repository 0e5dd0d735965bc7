//! adb's transport messages (AOSP `adb/protocol.txt`): a 24-byte header of
//! six little-endian u32s (command, arg0, arg1, data length, data checksum,
//! command ^ 0xffffffff) followed by the payload.

use std::io::{self, Read, Write};

pub const A_SYNC: u32 = 0x434e_5953;
pub const A_CNXN: u32 = 0x4e58_4e43;
pub const A_OPEN: u32 = 0x4e45_504f;
pub const A_OKAY: u32 = 0x5941_4b4f;
pub const A_CLSE: u32 = 0x4553_4c43;
pub const A_WRTE: u32 = 0x4554_5257;
pub const A_AUTH: u32 = 0x4854_5541;
pub const A_STLS: u32 = 0x534c_5453;

/// The version whose peers no longer check the payload checksum.
pub const A_VERSION: u32 = 0x0100_0001;
pub const A_VERSION_MIN: u32 = 0x0100_0000;
/// Largest payload this daemon accepts (adb's MAX_PAYLOAD).
pub const MAX_PAYLOAD: u32 = 1024 * 1024;
/// What peers older than A_VERSION can take.
pub const MAX_PAYLOAD_V1: u32 = 4 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub command: u32,
    pub arg0: u32,
    pub arg1: u32,
    pub data: Vec<u8>,
}

pub fn command_name(c: u32) -> String {
    let b = c.to_le_bytes();
    if b.iter().all(|x| x.is_ascii_uppercase()) {
        String::from_utf8_lossy(&b).into_owned()
    } else {
        format!("{c:#010x}")
    }
}

pub fn checksum(data: &[u8]) -> u32 {
    data.iter().map(|&b| b as u32).fold(0u32, u32::wrapping_add)
}

impl Message {
    pub fn new(command: u32, arg0: u32, arg1: u32, data: Vec<u8>) -> Self {
        Message {
            command,
            arg0,
            arg1,
            data,
        }
    }

    pub fn header(&self) -> [u8; 24] {
        header(self.command, self.arg0, self.arg1, &self.data, true)
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        write_message(w, self.command, self.arg0, self.arg1, &self.data, true)
    }

    /// Read one message. `max` bounds the payload; `check` verifies the
    /// checksum (peers older than A_VERSION send one).
    pub fn read_from(r: &mut impl Read, max: u32, check: bool) -> io::Result<Message> {
        let mut h = [0u8; 24];
        r.read_exact(&mut h)?;
        let f = |i: usize| u32::from_le_bytes([h[i * 4], h[i * 4 + 1], h[i * 4 + 2], h[i * 4 + 3]]);
        let (command, arg0, arg1, len, sum, magic) = (f(0), f(1), f(2), f(3), f(4), f(5));
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        if magic != command ^ 0xffff_ffff {
            return Err(bad(format!(
                "bad adb header: magic {magic:#x} does not match command {command:#x}"
            )));
        }
        if len > max {
            return Err(bad(format!(
                "{} payload of {len} bytes exceeds the negotiated {max}",
                command_name(command)
            )));
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data)?;
        if check && checksum(&data) != sum {
            return Err(bad(format!(
                "{} payload checksum mismatch",
                command_name(command)
            )));
        }
        Ok(Message {
            command,
            arg0,
            arg1,
            data,
        })
    }
}

/// A message header; `with_checksum` false leaves the checksum 0, as adbd
/// does for peers of A_VERSION and later (they do not check it).
pub fn header(command: u32, arg0: u32, arg1: u32, data: &[u8], with_checksum: bool) -> [u8; 24] {
    let mut h = [0u8; 24];
    let fields = [
        command,
        arg0,
        arg1,
        data.len() as u32,
        if with_checksum { checksum(data) } else { 0 },
        command ^ 0xffff_ffff,
    ];
    for (i, f) in fields.iter().enumerate() {
        h[i * 4..i * 4 + 4].copy_from_slice(&f.to_le_bytes());
    }
    h
}

pub fn write_message(
    w: &mut impl Write,
    command: u32,
    arg0: u32,
    arg1: u32,
    data: &[u8],
    with_checksum: bool,
) -> io::Result<()> {
    w.write_all(&header(command, arg0, arg1, data, with_checksum))?;
    w.write_all(data)?;
    w.flush()
}

/// The CNXN banner: `device::ro.product.name=..;ro.product.model=..;ro.product.device=..;features=..`
pub fn device_banner(name: &str, model: &str, device: &str, features: &[&str]) -> Vec<u8> {
    let clean = |s: &str| s.replace([';', '\0'], "_");
    format!(
        "device::ro.product.name={};ro.product.model={};ro.product.device={};features={}",
        clean(name),
        clean(model),
        clean(device),
        features.join(",")
    )
    .into_bytes()
}

/// The features a host names in its CNXN banner (`host::features=a,b`).
pub fn banner_features(banner: &[u8]) -> Vec<String> {
    let s = String::from_utf8_lossy(banner);
    let s = s.trim_end_matches('\0');
    let props = s.splitn(3, ':').nth(2).unwrap_or("");
    props
        .split(';')
        .find_map(|p| p.strip_prefix("features="))
        .map(|f| {
            f.split(',')
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_magic() {
        let m = Message::new(A_WRTE, 1, 2, b"hello".to_vec());
        let mut buf = Vec::new();
        m.write_to(&mut buf).unwrap();
        assert_eq!(&buf[..4], b"WRTE");
        assert_eq!(buf.len(), 29);
        let back = Message::read_from(&mut buf.as_slice(), MAX_PAYLOAD, true).unwrap();
        assert_eq!(back, m);
        // A corrupted magic or checksum is refused with a reason.
        let mut bad = buf.clone();
        bad[20] ^= 1;
        assert!(Message::read_from(&mut bad.as_slice(), MAX_PAYLOAD, true).is_err());
        let mut bad = buf.clone();
        bad[28] ^= 1;
        assert!(Message::read_from(&mut bad.as_slice(), MAX_PAYLOAD, true).is_err());
        assert!(Message::read_from(&mut bad.as_slice(), MAX_PAYLOAD, false).is_ok());
        assert!(Message::read_from(&mut buf.as_slice(), 4, false).is_err());
    }

    #[test]
    fn constants_spell_the_commands() {
        for (c, s) in [
            (A_SYNC, "SYNC"),
            (A_CNXN, "CNXN"),
            (A_OPEN, "OPEN"),
            (A_OKAY, "OKAY"),
            (A_CLSE, "CLSE"),
            (A_WRTE, "WRTE"),
            (A_AUTH, "AUTH"),
            (A_STLS, "STLS"),
        ] {
            assert_eq!(&c.to_le_bytes(), s.as_bytes());
            assert_eq!(command_name(c), s);
        }
    }

    #[test]
    fn banners() {
        let b = device_banner("work", "work", "cells", &["shell_v2", "fixed_push_mkdir"]);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "device::ro.product.name=work;ro.product.model=work;ro.product.device=cells;features=shell_v2,fixed_push_mkdir"
        );
        assert_eq!(
            banner_features(b"host::features=shell_v2,cmd,stat_v2\0"),
            vec!["shell_v2", "cmd", "stat_v2"]
        );
        assert!(banner_features(b"host::").is_empty());
    }
}
