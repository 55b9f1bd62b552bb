//! Minting tokens: JWT access tokens signed with the key ring, and opaque refresh
//! tokens (32 random bytes) of which only a SHA-256 hash is stored.

use std::time::Duration;

use agora_kit::token::{Claims, Role};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
use sha2::{Digest, Sha256};

use crate::keys::KeyRing;

/// Who a token is for.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub user_id: &'a str,
    pub session_id: &'a str,
    pub role: Role,
}

/// Signs access tokens.
#[derive(Debug, Clone)]
pub struct Minter {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
}

impl Minter {
    pub fn access_token(&self, keys: &KeyRing, subject: Subject<'_>) -> anyhow::Result<String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: subject.user_id.to_owned(),
            sid: subject.session_id.to_owned(),
            role: subject.role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(keys.signing_kid().to_owned());
        Ok(jsonwebtoken::encode(&header, &claims, keys.signing_key())?)
    }
}

/// A fresh refresh token, as handed to the client.
pub fn new_refresh_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// What is stored for a refresh token.
pub fn hash_refresh_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
