//! `jsonwebtoken`'s signature checks, done by `ring`.
//!
//! The crate parses and validates tokens, and leaves the cryptography to a provider: its own are
//! RustCrypto's RSA and elliptic-curve crates or aws-lc (a C build). `ring` is already in the
//! build for TLS, so this adapter keeps a dozen crates out of every cold build (CI compiles each
//! three times). It maps each algorithm `jwt` accepts to `ring`'s verification of it and does no
//! cryptography of its own; it cannot sign.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature as ring_sig;

/// Installed by [`install`] before the first token is checked.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes `ring` the process's provider (a no-op when it already is).
pub fn install() {
    // Fails only when a provider is already installed, and no other is built in.
    let _ = PROVIDER.install_default();
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(ErrorKind::InvalidAlgorithm.into())
}

fn rsa_parameters(alg: Algorithm) -> Option<&'static ring_sig::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &ring_sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &ring_sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &ring_sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn ecdsa_algorithm(alg: Algorithm) -> Option<&'static ring_sig::EcdsaVerificationAlgorithm> {
    match alg {
        Algorithm::ES256 => Some(&ring_sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Some(&ring_sig::ECDSA_P384_SHA384_FIXED),
        _ => None,
    }
}

/// A verifier for `alg` with `key`, refused when the key is of another family than the
/// algorithm or the algorithm is not one `jwt` accepts.
fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let usable = match key.family() {
        AlgorithmFamily::Rsa => rsa_parameters(*alg).is_some(),
        AlgorithmFamily::Ec => ecdsa_algorithm(*alg).is_some(),
        _ => false,
    };
    if !usable {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        key: key.kind().clone(),
    }))
}

struct RingVerifier {
    alg: Algorithm,
    key: DecodingKeyKind,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        let verified = match (
            &self.key,
            rsa_parameters(self.alg),
            ecdsa_algorithm(self.alg),
        ) {
            (DecodingKeyKind::RsaModulusExponent { n, e }, Some(parameters), _) => {
                ring_sig::RsaPublicKeyComponents { n, e }.verify(parameters, message, sig)
            }
            // An EC key from a JWK is the uncompressed point, 0x04 || x || y.
            (DecodingKeyKind::SecretOrDer(point), _, Some(algorithm)) => {
                ring_sig::UnparsedPublicKey::new(algorithm, point).verify(message, sig)
            }
            _ => return Err(signature::Error::new()),
        };
        verified.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}
