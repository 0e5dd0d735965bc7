//! adb's authentication (AOSP `adb/daemon/auth.cpp`): to a host's CNXN the
//! daemon answers `AUTH TOKEN` with 20 random bytes; the host signs them
//! with its private key (RSA PKCS#1 v1.5, the token taken as a SHA-1
//! digest) and sends `AUTH SIGNATURE`; a signature made by an authorized
//! key gets the CNXN, any other a new token. A host whose keys are all
//! refused sends `AUTH RSAPUBLICKEY`: a phone would ask its user; a VP's
//! keys are given by the host's admin (`cellctl adb VP --authorize`), so the
//! host just stays unauthorized (`adb devices` says so).

use std::path::PathBuf;

use cells_templates::adbkey::{self, AdbKey};
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};

pub const AUTH_TOKEN: u32 = 1;
pub const AUTH_SIGNATURE: u32 = 2;
pub const AUTH_RSAPUBLICKEY: u32 = 3;
pub const TOKEN_SIZE: usize = 20;

/// Where the authorized keys come from.
#[derive(Debug, Clone)]
pub enum Keys {
    /// An adb_keys file, read at each connection (the admin may change it
    /// while the VP runs). A missing or empty file authorizes nobody.
    File(PathBuf),
    /// Keys given directly (tests).
    List(Vec<AdbKey>),
}

impl Keys {
    pub fn load(&self) -> Vec<AdbKey> {
        match self {
            Keys::File(p) => adbkey::parse_file(&std::fs::read_to_string(p).unwrap_or_default()),
            Keys::List(v) => v.clone(),
        }
    }
}

/// A new token from the kernel's random source.
pub fn new_token() -> std::io::Result<[u8; TOKEN_SIZE]> {
    use std::io::Read;
    let mut t = [0u8; TOKEN_SIZE];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut t)?;
    Ok(t)
}

/// Did one of `keys` make `signature` over `token`?
pub fn verify(keys: &[AdbKey], token: &[u8], signature: &[u8]) -> Option<AdbKey> {
    keys.iter()
        .find(|k| {
            RsaPublicKey::new(
                BigUint::from_bytes_be(&k.modulus),
                BigUint::from(k.exponent),
            )
            .is_ok_and(|pk| {
                pk.verify(Pkcs1v15Sign::new::<sha1::Sha1>(), token, signature)
                    .is_ok()
            })
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::RsaPrivateKey;

    /// An adb public key line for a private key, as adb writes adbkey.pub.
    pub fn pub_line(k: &RsaPrivateKey, comment: &str) -> String {
        use rsa::traits::PublicKeyParts;
        let n = k.n().to_bytes_le();
        let mut raw = Vec::new();
        raw.extend_from_slice(&64u32.to_le_bytes());
        raw.extend_from_slice(&0u32.to_le_bytes());
        let mut words = n.clone();
        words.resize(256, 0);
        raw.extend_from_slice(&words);
        raw.extend(std::iter::repeat_n(0u8, 256));
        raw.extend_from_slice(&65537u32.to_le_bytes());
        format!("{} {comment}", adbkey::base64_encode(&raw))
    }

    #[test]
    fn signatures_of_authorized_keys_verify_others_do_not() {
        // A fixed seed keeps the test fast and repeatable.
        use rsa::rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let good = RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let other = RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let keys = vec![adbkey::parse_line(&pub_line(&good, "good@host")).unwrap()];
        let token = new_token().unwrap();
        let sig = good
            .sign(Pkcs1v15Sign::new::<sha1::Sha1>(), &token)
            .unwrap();
        assert_eq!(verify(&keys, &token, &sig).unwrap().comment, "good@host");
        let bad = other
            .sign(Pkcs1v15Sign::new::<sha1::Sha1>(), &token)
            .unwrap();
        assert!(verify(&keys, &token, &bad).is_none());
        // A signature over another token does not count.
        let token2 = new_token().unwrap();
        assert!(verify(&keys, &token2, &sig).is_none());
        assert!(verify(&[], &token, &sig).is_none());
    }
}
