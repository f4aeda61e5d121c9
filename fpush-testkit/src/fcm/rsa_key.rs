//! RSA keys for test service accounts, made at run time.
//!
//! ring signs and verifies RSA but cannot generate keys, and rcgen generates RSA keys only with
//! the aws-lc-rs backend (a long C build). A test key needs no more than textbook RSA: two
//! random 1024-bit probable primes (Miller–Rabin), `e = 65537`, the CRT values, and the DER
//! layout of PKCS#1 wrapped in PKCS#8, which is what a Firebase service-account file carries.
//! ring then parses the key and checks its consistency before anything signs with it.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use num_bigint::BigUint;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{KeyPair, RsaKeyPair};

/// Size of each prime; the modulus is twice that (2048 bits, the least ring accepts).
const PRIME_BITS: usize = 1024;
/// Miller–Rabin rounds with random bases: a composite survives with probability below 4^-40.
const MILLER_RABIN_ROUNDS: usize = 40;
const PUBLIC_EXPONENT: u32 = 65_537;

/// An RSA key pair as a service-account file and a verifier need it.
pub struct RsaTestKey {
    pkcs8_der: Vec<u8>,
    public_der: Vec<u8>,
}

impl RsaTestKey {
    /// A fresh 2048-bit key.
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        loop {
            let p = random_prime(&rng);
            let q = random_prime(&rng);
            if let Some(key) = Self::from_primes(p, q) {
                return key;
            }
        }
    }

    /// One key per process, for the many tests that do not care which key they get (generating
    /// costs a few hundred milliseconds in a debug build).
    pub fn shared() -> Arc<RsaTestKey> {
        static KEY: OnceLock<Arc<RsaTestKey>> = OnceLock::new();
        KEY.get_or_init(|| Arc::new(RsaTestKey::generate())).clone()
    }

    /// The private key, PKCS#8 DER.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8_der
    }

    /// The private key as PEM (`-----BEGIN PRIVATE KEY-----`), as Google writes it.
    pub fn pkcs8_pem(&self) -> String {
        let base64 = STANDARD.encode(&self.pkcs8_der);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in base64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    /// The public key as ring's verifiers take it (PKCS#1 `RSAPublicKey` DER).
    pub fn public_der(&self) -> &[u8] {
        &self.public_der
    }

    fn from_primes(p: BigUint, q: BigUint) -> Option<Self> {
        if p == q {
            return None;
        }
        // The CRT coefficient is conventionally q⁻¹ mod p with p > q.
        let (p, q) = if p > q { (p, q) } else { (q, p) };
        let one = BigUint::from(1u32);
        let e = BigUint::from(PUBLIC_EXPONENT);
        let (p1, q1) = (&p - &one, &q - &one);
        let d = e.modinv(&(&p1 * &q1))?;
        let n = &p * &q;
        let pkcs1 = der_sequence(&[
            der_uint(&BigUint::from(0u32)),
            der_uint(&n),
            der_uint(&e),
            der_uint(&d),
            der_uint(&p),
            der_uint(&q),
            der_uint(&(&d % &p1)),
            der_uint(&(&d % &q1)),
            der_uint(&q.modinv(&p)?),
        ]);
        // rsaEncryption, 1.2.840.113549.1.1.1, with NULL parameters.
        let algorithm = der_sequence(&[
            vec![
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
            ],
            vec![0x05, 0x00],
        ]);
        let pkcs8_der = der_sequence(&[
            der_uint(&BigUint::from(0u32)),
            algorithm,
            der_tlv(0x04, &pkcs1),
        ]);
        let pair = RsaKeyPair::from_pkcs8(&pkcs8_der).ok()?;
        let public_der = pair.public_key().as_ref().to_vec();
        Some(Self {
            pkcs8_der,
            public_der,
        })
    }
}

fn random_prime(rng: &SystemRandom) -> BigUint {
    let e = BigUint::from(PUBLIC_EXPONENT);
    let one = BigUint::from(1u32);
    loop {
        let mut bytes = vec![0u8; PRIME_BITS / 8];
        fill(rng, &mut bytes);
        // Top two bits set so the product of two primes has the full 2048 bits; odd.
        bytes[0] |= 0xc0;
        if let Some(last) = bytes.last_mut() {
            *last |= 1;
        }
        let candidate = BigUint::from_bytes_be(&bytes);
        if (&candidate - &one) % &e != BigUint::from(0u32) && is_probable_prime(&candidate, rng) {
            return candidate;
        }
    }
}

fn fill(rng: &SystemRandom, bytes: &mut [u8]) {
    // The system RNG failing leaves no way to make a key; a test cannot go on without one.
    rng.fill(bytes)
        .expect("system random number generator failed");
}

const SMALL_PRIMES: [u32; 54] = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167, 173, 179, 181, 191, 193,
    197, 199, 211, 223, 227, 229, 233, 239, 241, 251,
];

fn is_probable_prime(n: &BigUint, rng: &SystemRandom) -> bool {
    let zero = BigUint::from(0u32);
    for p in SMALL_PRIMES {
        if n % p == zero {
            return *n == BigUint::from(p);
        }
    }
    let one = BigUint::from(1u32);
    let n_minus_1 = n - &one;
    let s = n_minus_1.trailing_zeros().unwrap_or(0);
    let d = &n_minus_1 >> s;
    let three = BigUint::from(3u32);
    'rounds: for _ in 0..MILLER_RABIN_ROUNDS {
        let mut bytes = vec![0u8; PRIME_BITS / 8];
        fill(rng, &mut bytes);
        // A base in [2, n-2].
        let a = BigUint::from_bytes_be(&bytes) % (n - &three) + 2u32;
        let mut x = a.modpow(&d, n);
        if x == one || x == n_minus_1 {
            continue;
        }
        for _ in 1..s {
            x = (&x * &x) % n;
            if x == n_minus_1 {
                continue 'rounds;
            }
        }
        return false;
    }
    true
}

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

fn der_uint(value: &BigUint) -> Vec<u8> {
    let mut bytes = value.to_bytes_be();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    der_tlv(0x02, &bytes)
}

fn der_sequence(items: &[Vec<u8>]) -> Vec<u8> {
    der_tlv(0x30, &items.concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};

    #[test]
    fn generated_key_signs_and_verifies_with_ring() {
        let key = RsaTestKey::shared();
        let pair = RsaKeyPair::from_pkcs8(key.pkcs8_der()).unwrap();
        assert_eq!(pair.public().modulus_len(), 256);
        let mut signature = vec![0; pair.public().modulus_len()];
        pair.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            b"hello",
            &mut signature,
        )
        .unwrap();
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_der());
        public.verify(b"hello", &signature).unwrap();
        assert!(public.verify(b"hellO", &signature).is_err());
    }

    #[test]
    fn pem_is_pkcs8_with_wrapped_lines() {
        let pem = RsaTestKey::shared().pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));
        assert!(pem.lines().all(|line| line.len() <= 64));
    }

    #[test]
    fn primality_test_knows_small_cases() {
        let rng = SystemRandom::new();
        // 2^127 - 1 is prime; 561 is a Carmichael number.
        let mersenne = (BigUint::from(1u32) << 127usize) - 1u32;
        assert!(is_probable_prime(&mersenne, &rng));
        assert!(!is_probable_prime(&BigUint::from(561u32), &rng));
        assert!(!is_probable_prime(&(&mersenne * &mersenne), &rng));
    }

    #[test]
    fn der_lengths_use_the_long_form_above_127() {
        assert_eq!(der_len(5), vec![5]);
        assert_eq!(der_len(200), vec![0x81, 200]);
        assert_eq!(der_len(1190), vec![0x82, 0x04, 0xa6]);
    }
}
