//! JWTs for tests, signed with keys made here: by `openssl` (a separate implementation from
//! the service's `jsonwebtoken` verification), signed with `ring`, published as a JWK set.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self as ring_sig, KeyPair};
use serde_json::{Value, json};

enum Signer {
    Rsa(ring_sig::RsaKeyPair),
    Ec(ring_sig::EcdsaKeyPair),
}

/// A signing key and its public half as a JWK, named `kid`.
pub struct TestKey {
    pub kid: String,
    signer: Signer,
    pub jwk: Value,
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl runs (install the openssl package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.unwrap_or_default())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

/// A new private key as PKCS#8 DER.
fn pkcs8(algorithm: &[&str]) -> Vec<u8> {
    let mut args = vec!["genpkey"];
    args.extend_from_slice(algorithm);
    let pem = openssl(&args, None);
    openssl(
        &["pkcs8", "-topk8", "-nocrypt", "-outform", "DER"],
        Some(&pem),
    )
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload` of a JWT, ready to sign.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64(header.to_string()), b64(claims.to_string()))
}

impl TestKey {
    pub fn rsa(kid: &str) -> Self {
        let der = pkcs8(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
        let key = ring_sig::RsaKeyPair::from_pkcs8(&der).expect("RSA key");
        let public = ring_sig::RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
        let jwk = json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": b64(&public.n), "e": b64(&public.e),
        });
        Self {
            kid: kid.to_owned(),
            signer: Signer::Rsa(key),
            jwk,
        }
    }

    pub fn ec(kid: &str) -> Self {
        let der = pkcs8(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        let key = ring_sig::EcdsaKeyPair::from_pkcs8(
            &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
            &SystemRandom::new(),
        )
        .expect("EC key");
        // The uncompressed point: 0x04 || x || y.
        let point = key.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "kid": kid, "use": "sig", "crv": "P-256",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        });
        Self {
            kid: kid.to_owned(),
            signer: Signer::Ec(key),
            jwk,
        }
    }

    pub fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        }
    }

    /// A token for `claims`, its header naming `alg` and `kid` as given.
    pub fn sign_as(&self, alg: &str, kid: &str, claims: &Value) -> String {
        let input = signing_input(&json!({"alg": alg, "typ": "JWT", "kid": kid}), claims);
        let rng = SystemRandom::new();
        let signature = match &self.signer {
            Signer::Rsa(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(
                    &ring_sig::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut signature,
                )
                .unwrap();
                signature
            }
            Signer::Ec(key) => key.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{input}.{}", b64(signature))
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.alg(), &self.kid, claims)
    }
}

/// The JWK set publishing `keys`.
pub fn key_set(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}
