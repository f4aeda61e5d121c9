//! Compact keys for the per-token maps: a token is never stored, only a seeded 128-bit hash of it.
//!
//! A million cached 64-hex tokens must cost well under 100 bytes each, so an entry is the 16-byte
//! hash plus an 8-byte timestamp. Because the key is already uniformly random, the map uses its bits
//! as they are ([`KeyBits`]) instead of hashing them a second time.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::mem::size_of;

use dashmap::DashMap;
use xxhash_rust::xxh3::xxh3_128_with_seed;

/// The 128-bit seeded hash of a device token.
///
/// Two words rather than one `u128`: a `u128` is 16-byte aligned, which would pad every entry
/// `(key, u64)` from 24 to 32 bytes. A collision of two tokens would merge their entries; at 128
/// bits that is out of reach for any realistic number of tokens.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TokenKey([u64; 2]);

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Both words are uniformly random already; one of them is enough to place the entry.
        state.write_u64(self.0[0]);
    }
}

/// Turns tokens into [`TokenKey`]s with a seed drawn at random for each map.
///
/// The seed is what makes the pass-through map safe: tokens come from XMPP clients, and without a
/// secret seed someone could choose tokens whose keys all land in the same buckets.
#[derive(Clone, Debug)]
pub(crate) struct TokenHasher {
    seed: u64,
}

impl TokenHasher {
    /// A hasher with a fresh, unpredictable seed (from the standard library's random hash keys).
    pub(crate) fn random() -> Self {
        Self {
            seed: RandomState::new().hash_one(0x6670_7573_685f_726c_u64),
        }
    }

    pub(crate) fn key(&self, token: &str) -> TokenKey {
        let hash = xxh3_128_with_seed(token.as_bytes(), self.seed);
        TokenKey([hash as u64, (hash >> 64) as u64])
    }
}

/// A map from token keys to a compact value, placed by the key's own bits.
pub(crate) type TokenMap<V> = DashMap<TokenKey, V, KeyBits>;

pub(crate) fn new_token_map<V>() -> TokenMap<V> {
    DashMap::with_hasher(KeyBits)
}

/// The heap a [`TokenMap`]'s tables hold: every allocated bucket (used, free or left by a removal)
/// costs one entry plus one control byte. Tables do not shrink, so this is the high-water mark.
pub(crate) fn table_bytes<V>(map: &TokenMap<V>) -> usize {
    let buckets: usize = map
        .shards()
        .iter()
        .map(|shard| shard.read().buckets())
        .sum();
    buckets * (size_of::<(TokenKey, V)>() + 1)
}

/// Builds [`KeyBitsHasher`]s: the hash of a [`TokenKey`] is its first word, unchanged.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct KeyBits;

impl BuildHasher for KeyBits {
    type Hasher = KeyBitsHasher;

    fn build_hasher(&self) -> KeyBitsHasher {
        KeyBitsHasher(0)
    }
}

/// A hasher that passes a `u64` through. Only [`TokenKey`]s are hashed with it.
#[derive(Default, Debug)]
pub(crate) struct KeyBitsHasher(u64);

impl Hasher for KeyBitsHasher {
    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    /// Not reached for [`TokenKey`]; folds the bytes so any other key would still spread.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(23) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_a_sixteen_byte_key_and_an_eight_byte_value() {
        assert_eq!(size_of::<TokenKey>(), 16);
        assert_eq!(size_of::<(TokenKey, u64)>(), 24);
    }

    #[test]
    fn the_same_token_gives_the_same_key_and_different_tokens_differ() {
        let hasher = TokenHasher::random();
        assert_eq!(hasher.key("abc"), hasher.key("abc"));
        assert_ne!(hasher.key("abc"), hasher.key("abd"));
    }

    #[test]
    fn each_map_draws_its_own_seed() {
        assert_ne!(
            TokenHasher::random().key("abc"),
            TokenHasher::random().key("abc")
        );
    }

    #[test]
    fn the_map_hash_is_the_first_word_of_the_key() {
        let key = TokenKey([0x0123_4567_89ab_cdef, 42]);
        assert_eq!(KeyBits.hash_one(key), 0x0123_4567_89ab_cdef);
    }
}
