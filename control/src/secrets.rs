//! `secret` objects (QEMU's `qcrypto-secret`): named byte strings that
//! other options refer to by id (`key-secret` of an rbd node).
//!
//! As in QEMU, the value is kept decoded (`format=base64` input is
//! decoded once, when the object is added) and handed out in the form its
//! user needs: librados takes its key base64-encoded, so a key file of
//! base64 text is given with `format=base64`, decoded here and encoded
//! again for librados. Secrets encrypted with `keyid`/`iv` are refused.
//! Values never appear in logs or query results.

use std::collections::BTreeMap;

use crate::error::{ControlError, Result};
use crate::qapi::{SecretFormat, SecretOptions};

/// The secrets by id.
#[derive(Default)]
pub struct Secrets {
    by_id: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: the values are secret.
        f.debug_list().entries(self.by_id.keys()).finish()
    }
}

impl Secrets {
    /// Whether a secret has this id.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// `object-add qom-type=secret`, with QEMU's checks and messages.
    pub fn add(&mut self, o: SecretOptions) -> Result<()> {
        if o.keyid.is_some() || o.iv.is_some() {
            return Err(ControlError::failed(
                "Encrypted secrets ('keyid', 'iv') are not supported by ringstor yet",
            ));
        }
        let input: Vec<u8> = match (&o.data, &o.file) {
            (Some(_), Some(_)) => {
                return Err(ControlError::failed(
                    "'file' and 'data' are mutually exclusive",
                ))
            }
            (Some(d), None) => d.as_bytes().to_vec(),
            (None, Some(f)) => std::fs::read(f).map_err(|e| {
                ControlError::failed(format!(
                    "Unable to read {f}: Failed to open file \u{201c}{f}\u{201d}: {}",
                    io_desc(&e)
                ))
            })?,
            (None, None) => {
                return Err(ControlError::failed(
                    "Either 'file' or 'data' must be provided",
                ))
            }
        };
        let value = match o.format.unwrap_or(SecretFormat::Raw) {
            SecretFormat::Raw => input,
            SecretFormat::Base64 => decode_base64(&input)?,
        };
        self.by_id.insert(o.id, value);
        Ok(())
    }

    /// `object-del`; false when there is no such secret.
    pub fn del(&mut self, id: &str) -> bool {
        self.by_id.remove(id).is_some()
    }

    /// The secret as base64 text (`qcrypto_secret_lookup_as_base64`).
    pub fn lookup_base64(&self, id: &str) -> Result<String> {
        self.by_id
            .get(id)
            .map(|v| encode_base64(v))
            .ok_or_else(|| ControlError::failed(format!("No secret with id '{id}'")))
    }
}

fn io_desc(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn encode_base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// QEMU's `qbase64_decode`: only base64 characters are allowed (no
/// newline), then decoded leniently like GLib (padding and a trailing
/// partial group are tolerated).
pub fn decode_base64(input: &[u8]) -> Result<Vec<u8>> {
    if input.contains(&0) {
        return Err(ControlError::failed(
            "Base64 data contains embedded NUL characters",
        ));
    }
    let value = |c: u8| ALPHABET.iter().position(|&a| a == c).map(|p| p as u32);
    if input.iter().any(|&c| c != b'=' && value(c).is_none()) {
        return Err(ControlError::failed(
            "Base64 data contains invalid characters",
        ));
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input.iter().take_while(|&&c| c != b'=') {
        acc = (acc << 6) | value(c).unwrap_or(0);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_refuses_junk() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            let e = encode_base64(data);
            assert_eq!(decode_base64(e.as_bytes()).expect("decodes"), data);
        }
        assert_eq!(encode_base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode_base64(b"fo"), "Zm8=");
        assert!(decode_base64(b"a!bc").is_err());
        assert!(decode_base64(b"abcd\n").is_err());
        // A Ceph key survives decode + encode unchanged.
        let key = "AQA8JA9raGbBChAAR0cfC3EbYFkZf7KCQ5enWw==";
        let raw = decode_base64(key.as_bytes()).expect("key");
        assert_eq!(raw.len(), 28);
        assert_eq!(encode_base64(&raw), key);
    }

    #[test]
    fn secrets_follow_qemu() {
        let mut s = Secrets::default();
        let opt = |data: Option<&str>, file: Option<&str>, format| SecretOptions {
            id: "s".into(),
            data: data.map(str::to_string),
            file: file.map(str::to_string),
            format,
            keyid: None,
            iv: None,
        };
        assert!(s.add(opt(None, None, None)).is_err());
        assert!(s.add(opt(Some("x"), Some("/etc/hostname"), None)).is_err());
        let e = s
            .add(opt(None, Some("/nonexistent"), None))
            .expect_err("missing file");
        assert!(
            e.desc().contains("No such file or directory"),
            "{}",
            e.desc()
        );
        s.add(opt(Some("Zm9v"), None, Some(SecretFormat::Base64)))
            .expect("base64");
        assert_eq!(s.lookup_base64("s").expect("lookup"), "Zm9v");
        s.add(opt(Some("Zm9v"), None, Some(SecretFormat::Raw)))
            .expect("raw");
        assert_eq!(s.lookup_base64("s").expect("lookup"), "Wm05dg==");
        assert_eq!(
            s.lookup_base64("t").expect_err("absent").desc(),
            "No secret with id 't'"
        );
        assert!(format!("{s:?}").contains('s') && !format!("{s:?}").contains("Zm9v"));
    }
}
