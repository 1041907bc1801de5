//! Request ids every replica can verify without shared state: `tlr-` + base64url(route/model/
//! nonce) + `.` + an HMAC-SHA256 tag (128 bits) with the key named by
//! `server.request_id_key_env` (replicas share it). Feedback posted to any replica for an answer
//! from another counts for the route and model that answered; a forged or altered id is refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Mints and checks request ids with one key.
#[derive(Clone)]
pub struct RequestIds {
    /// SHA-256 states after the key's inner and outer pads: each tag then hashes only its payload
    /// and the inner digest (two compressions instead of four).
    inner: Sha256,
    outer: Sha256,
}

impl std::fmt::Debug for RequestIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestIds(***)")
    }
}

/// Tag bytes kept from the HMAC (128 bits).
const TAG: usize = 16;

impl RequestIds {
    /// Ids signed with `key` (any length: hashed when longer than a block, as HMAC does).
    pub fn new(key: &[u8]) -> RequestIds {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let pad = |b: u8| k.map(|k| k ^ b);
        RequestIds {
            inner: Sha256::new().chain_update(pad(0x36)),
            outer: Sha256::new().chain_update(pad(0x5c)),
        }
    }

    fn tag(&self, payload: &[u8]) -> [u8; 32] {
        let inner = self.inner.clone().chain_update(payload).finalize();
        self.outer.clone().chain_update(inner).finalize().into()
    }

    /// The id of a request of `route` answered by `model` (config names: no `/` in them).
    pub fn mint(&self, route: &str, model: &str, nonce: u64) -> String {
        // `{route}/{model}/{nonce:016x}`, without `fmt` on the request path
        let mut payload = Vec::with_capacity(route.len() + model.len() + 18);
        payload.extend_from_slice(route.as_bytes());
        payload.push(b'/');
        payload.extend_from_slice(model.as_bytes());
        payload.push(b'/');
        payload.extend(hex(&nonce.to_be_bytes()));
        let tag = self.tag(&payload);
        let mut id = String::with_capacity(4 + payload.len() * 4 / 3 + 2 + 2 * TAG);
        id.push_str("tlr-");
        URL_SAFE_NO_PAD.encode_string(&payload, &mut id);
        id.push('.');
        id.extend(hex(tag.get(..TAG).unwrap_or_default()).map(char::from));
        id
    }

    /// The (route, model) an id was minted for, if its tag is right.
    pub fn verify(&self, id: &str) -> Option<(String, String)> {
        let (payload, tag) = id.strip_prefix("tlr-")?.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let want = self.tag(&payload);
        let got = hex16(tag)?;
        // constant time: every byte compared
        let diff = want
            .iter()
            .zip(got.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return None;
        }
        let text = String::from_utf8(payload).ok()?;
        let mut parts = text.splitn(3, '/');
        let (route, model) = (parts.next()?, parts.next()?);
        parts.next()?;
        Some((route.to_owned(), model.to_owned()))
    }
}

/// Lower-case hex digits of `bytes`.
fn hex(bytes: &[u8]) -> impl Iterator<Item = u8> + '_ {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
}

fn hex16(s: &str) -> Option<[u8; TAG]> {
    if s.len() != 2 * TAG {
        return None;
    }
    let mut out = [0u8; TAG];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_verify_across_replicas_and_refuse_forgeries() {
        let a = RequestIds::new(b"shared-secret");
        let b = RequestIds::new(b"shared-secret");
        let id = a.mint("support", "support-ft", 42);
        assert!(id.starts_with("tlr-") && http::HeaderValue::from_str(&id).is_ok());
        assert_eq!(
            b.verify(&id),
            Some(("support".to_owned(), "support-ft".to_owned()))
        );
        assert_eq!(RequestIds::new(b"other").verify(&id), None, "another key");
        // another route under the same tag, a flipped tag digit, truncation, garbage
        let (payload, tag) = id.split_once('.').unwrap();
        let nonce = u64::MAX - 0xabc;
        let big = a.mint("r", "m", nonce);
        let big_payload = URL_SAFE_NO_PAD.decode(&big[4..big.find('.').unwrap()]);
        assert_eq!(
            big_payload.unwrap(),
            format!("r/m/{nonce:016x}").into_bytes()
        );
        let other = URL_SAFE_NO_PAD.encode("default/gpt-4o/000000000000002a");
        for forged in [
            format!("tlr-{other}.{tag}"),
            format!(
                "{payload}.{}{}",
                if tag.starts_with('0') { '1' } else { '0' },
                &tag[1..]
            ),
            id[..id.len() - 2].to_owned(),
            "tlr-".to_owned(),
            "tlr-!!!.zz".to_owned(),
            String::new(),
        ] {
            assert_eq!(b.verify(&forged), None, "{forged}");
        }
        // HMAC-SHA256 as RFC 4231 test case 2 defines it
        let t = RequestIds::new(b"Jefe").tag(b"what do ya want for nothing?");
        assert_eq!(
            t.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
