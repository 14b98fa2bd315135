//! Signed feed tokens: `v1.<channel>.<expiry unix seconds>.<hex HMAC-SHA256>`, the MAC over
//! `v1.<channel>.<expiry>` with the shared secret (`feed.token_secret`). Channel `*` grants
//! every channel. Pure functions: the caller passes the current time.

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token is for channel `{0}`")]
    WrongChannel(String),
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub channel: String,
    pub expires_unix: i64,
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// A token for `channel` (or `*`) valid until `expires_unix`.
pub fn sign(secret: &str, channel: &str, expires_unix: i64) -> String {
    let body = format!("v1.{channel}.{expires_unix}");
    let mac = hmac_sha256(secret.as_bytes(), body.as_bytes());
    format!("{body}.{}", hex::encode(mac))
}

/// Check a token's form, signature and expiry (at `now_unix`), then that it grants `channel`.
pub fn verify(
    secret: &str,
    token: &str,
    channel: &str,
    now_unix: i64,
) -> Result<Grant, TokenError> {
    if token.len() > 256 {
        return Err(TokenError::Malformed);
    }
    let (body, mac_hex) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let mut parts = body.splitn(3, '.');
    let (Some("v1"), Some(granted), Some(exp)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let expires_unix: i64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    let given = hex::decode(mac_hex).map_err(|_| TokenError::Malformed)?;
    let want = hmac_sha256(secret.as_bytes(), body.as_bytes());
    let same = given.len() == want.len()
        && given
            .iter()
            .zip(want.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(TokenError::BadSignature);
    }
    if now_unix >= expires_unix {
        return Err(TokenError::Expired);
    }
    if granted != "*" && granted != channel {
        return Err(TokenError::WrongChannel(granted.to_string()));
    }
    Ok(Grant {
        channel: granted.to_string(),
        expires_unix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231() {
        // RFC 4231 test cases 2 and 6 (a key longer than the block).
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn tokens_verify_expire_and_bind_to_channels() {
        let t = sign("s3cret", "news", 1_000);
        assert_eq!(
            verify("s3cret", &t, "news", 999).unwrap().expires_unix,
            1_000
        );
        assert_eq!(
            verify("s3cret", &t, "news", 1_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify("other", &t, "news", 10),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify("s3cret", &t, "sport", 10),
            Err(TokenError::WrongChannel("news".into()))
        );
        let any = sign("s3cret", "*", 1_000);
        assert!(verify("s3cret", &any, "sport", 10).is_ok());
        let forged = t.replace("1000", "9999");
        assert_eq!(
            verify("s3cret", &forged, "news", 10),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "x",
            "v1.news",
            "v1.news.10",
            "v2.news.10.00",
            "v1.news.ten.00",
            "v1.news.10.zz",
        ] {
            assert_eq!(
                verify("s3cret", bad, "news", 0),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(token in ".{0,300}", channel in "[a-z*]{0,8}") {
            let _ = verify("k", &token, &channel, 0);
        }
    }
}
