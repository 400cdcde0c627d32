//! Secrets at rest: stored provider keys are sealed with ChaCha20-Poly1305 (ring) under a key
//! kept in its own file (mode 0600) next to the database, so the database alone reveals nothing.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use rand::RngCore;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for the one place that sends it upstream.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A masked preview (`sk-p…wxyz`) for lists and the UI.
    #[must_use]
    pub fn preview(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() <= 8 {
            return "****".into();
        }
        let head: String = chars[..4].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{head}…{tail}")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

/// The sealing key.
pub struct SecretBox {
    key: LessSafeKey,
}

impl SecretBox {
    /// Reads the key file, or creates it (32 random bytes, mode 0600) on first start.
    pub fn open_or_create(path: &Path) -> Result<Self, String> {
        let bytes = if path.exists() {
            std::fs::read(path).map_err(|e| format!("cannot read the secrets key {}: {e}", path.display()))?
        } else {
            let mut key = vec![0u8; 32];
            rand::rng().fill_bytes(&mut key);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file =
                options.open(path).map_err(|e| format!("cannot create the secrets key {}: {e}", path.display()))?;
            file.write_all(&key)
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write the secrets key: {e}"))?;
            key
        };
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| format!("the secrets key {} is not 32 bytes", path.display()))?;
        Ok(Self { key: LessSafeKey::new(unbound) })
    }

    /// nonce ‖ ciphertext ‖ tag; `context` is bound as associated data. Fails only on a
    /// plaintext longer than the cipher allows (about 256 GiB).
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, ring::error::Unspecified> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = plaintext.to_vec();
        self.key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut out)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&out);
        Ok(sealed)
    }

    /// Opens what [`seal`](Self::seal) produced with the same context.
    #[must_use]
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Option<Vec<u8>> {
        let (nonce, data) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = data.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(context), &mut buf).ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_binds_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let b = SecretBox::open_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let sealed = b.seal(b"sk-live-123", b"gw/openai/default").unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"sk-live-123"));
        assert_eq!(b.open(&sealed, b"gw/openai/default").unwrap(), b"sk-live-123");
        assert!(b.open(&sealed, b"other/openai/default").is_none(), "bound to its context");
        let again = SecretBox::open_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed, b"gw/openai/default").unwrap(), b"sk-live-123", "the key file persists");
        assert_eq!(format!("{:?}", Secret::new("sk-secret".into())), "*****");
        assert_eq!(Secret::new("sk-proj-abcdefgh1234".into()).preview(), "sk-p…1234");
    }
}
