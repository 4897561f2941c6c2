//! Fuzzing the `Stripe-Signature` parser and verifier, with proptest: `cargo fuzz` needs a
//! nightly toolchain, which this project does not build with.
//!
//! Two kinds of input. Headers built from the scheme's grammar with every kind of wrong item
//! mixed in (repeated or garbled timestamps, garbled and foreign signatures, unknown schemes,
//! empty items, items without `=`, in any order), each checked against what the scheme says
//! the answer must be. And the kept corpus, `fuzz/corpus/signature_header/`: every file is
//! replayed on every run and used as a seed for byte-level mutations, checked for no panic and
//! for soundness (nothing is accepted without the right HMAC in it). `fuzz/run.sh` runs these
//! for minutes; a plain `cargo test` runs them briefly.

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;

const SECRET: &str = "whsec_fuzz_secret";
const NOW: i64 = 1_750_000_000;
const TOLERANCE: u64 = 300;

/// One comma-separated item of a header.
#[derive(Debug, Clone)]
enum Item {
    Timestamp(i64),
    /// `t=` with a value that is not an integer.
    BadTimestamp(String),
    /// `v1=` with the right signature for the timestamp Stripe signed.
    GoodV1,
    /// `v1=` with well-formed hex that is not the signature.
    OtherV1([u8; 32]),
    /// `v1=` with something that is not 64 hex digits.
    GarbledV1(String),
    /// Another scheme (`v0`) or an unknown key.
    Other(String, String),
    Empty,
    NoEquals(String),
}

impl Item {
    fn render(&self, signed_at: i64, body: &[u8]) -> String {
        match self {
            Self::Timestamp(t) => format!("t={t}"),
            Self::BadTimestamp(v) => format!("t={v}"),
            Self::GoodV1 => format!("v1={}", sign(SECRET, signed_at, body)),
            Self::OtherV1(sig) => format!("v1={}", hex::encode(sig)),
            Self::GarbledV1(v) => format!("v1={v}"),
            Self::Other(k, v) => format!("{k}={v}"),
            Self::Empty => String::new(),
            Self::NoEquals(v) => v.clone(),
        }
    }
}

fn item() -> impl Strategy<Value = Item> {
    let timestamp = prop_oneof![
        3 => NOW - 2 * TOLERANCE as i64..NOW + 2 * TOLERANCE as i64,
        1 => any::<i64>(),
    ];
    prop_oneof![
        4 => timestamp.prop_map(Item::Timestamp),
        1 => "[-+ .0-9a-z]{0,24}"
            // The item is trimmed, so trailing blanks are not part of the value.
            .prop_filter("must not parse", |v| v.trim_end().parse::<i64>().is_err())
            .prop_map(Item::BadTimestamp),
        4 => Just(Item::GoodV1),
        2 => any::<[u8; 32]>().prop_map(Item::OtherV1),
        2 => "[0-9a-fA-Fxz ]{0,70}"
            .prop_filter("must not decode", |v| {
                hex::decode_to_slice(v.trim_end(), &mut [0u8; 32]).is_err()
            })
            .prop_map(Item::GarbledV1),
        2 => ("[a-z0-9]{0,3}", "[^,]{0,20}")
            .prop_filter("t and v1 are the scheme's own keys", |(k, _)| k != "t" && k != "v1")
            .prop_map(|(k, v)| Item::Other(k, v)),
        1 => Just(Item::Empty),
        1 => "[a-z0-9]{1,8}".prop_map(Item::NoEquals),
    ]
}

/// What the scheme says of a header made of `items` (blanks around each), in the parser's
/// order: a malformed item ends the reading at once; then a timestamp and a `v1` must be there;
/// then the right signature; then the age. `Ok` carries the timestamp.
fn expected(items: &[Item], signed_at: i64) -> Result<i64, std::mem::Discriminant<SignatureError>> {
    let kind = |e: SignatureError| std::mem::discriminant(&e);
    let mut timestamp = None;
    let (mut saw_v1, mut good) = (false, false);
    for item in items {
        match item {
            Item::Empty | Item::Other(..) => {}
            Item::NoEquals(_) | Item::BadTimestamp(_) => {
                return Err(kind(SignatureError::Malformed("")));
            }
            Item::Timestamp(t) => {
                if timestamp.is_some() {
                    return Err(kind(SignatureError::Malformed("")));
                }
                timestamp = Some(*t);
            }
            Item::GoodV1 => (saw_v1, good) = (true, true),
            Item::OtherV1(_) | Item::GarbledV1(_) => saw_v1 = true,
        }
    }
    let Some(t) = timestamp else {
        return Err(kind(SignatureError::Malformed("")));
    };
    if !saw_v1 {
        return Err(kind(SignatureError::NoV1Signature));
    }
    if !good || t != signed_at {
        return Err(kind(SignatureError::Mismatch));
    }
    if (i128::from(NOW) - i128::from(t)).abs() > i128::from(TOLERANCE) {
        return Err(kind(SignatureError::Stale { tolerance_secs: 0 }));
    }
    Ok(t)
}

/// Soundness, for any input: an accepted header holds a `v1` that is the HMAC of the body at
/// the accepted timestamp.
fn check_sound(header: &str, body: &[u8]) {
    let secrets = ["whsec_other", SECRET];
    if let Ok(parsed) = verify(Some(header), body, &secrets, TOLERANCE, NOW) {
        let right = sign(SECRET, parsed.timestamp, body);
        let mut expected = [0u8; 32];
        hex::decode_to_slice(&right, &mut expected).unwrap();
        assert!(
            parsed.v1.contains(&expected),
            "accepted without the right HMAC: {header:?}"
        );
        assert!(
            (i128::from(NOW) - i128::from(parsed.timestamp)).abs() <= i128::from(TOLERANCE),
            "accepted a header outside the tolerance: {header:?}"
        );
    }
}

/// The body the corpus's headers were signed over (see `fuzz/corpus/README.md`).
const CORPUS_BODY: &[u8] = br#"{"id":"evt_fuzz","object":"event"}"#;

/// The corpus's bytes, read once: every mutation case starts from one of them.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| corpus().into_iter().map(|(_, bytes)| bytes).collect())
}

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    test_support::fuzz_corpus("signature_header").expect("fuzz/corpus/signature_header is readable")
}

#[test]
fn the_corpus_replays() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "the corpus is missing");
    for (path, bytes) in corpus {
        let header = String::from_utf8_lossy(&bytes);
        let header = header.trim_end_matches('\n');
        check_sound(header, CORPUS_BODY);
        // What the name promises: `ok-*` files verify, `bad-*` files do not.
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let verified = verify(Some(header), CORPUS_BODY, &[SECRET], u64::MAX, NOW).is_ok();
        assert_eq!(verified, name.starts_with("ok-"), "{name}: {header:?}");
    }
}

/// A byte-level change to a seed: replace, insert or delete one byte, or splice two seeds.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Splice(usize, usize, usize),
}

fn mutate(seeds: &[Vec<u8>], seed: usize, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = seeds[seed % seeds.len()].clone();
    for mutation in mutations {
        match *mutation {
            Mutation::Replace(at, b) if !bytes.is_empty() => {
                let at = at % bytes.len();
                bytes[at] = b;
            }
            Mutation::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
            Mutation::Delete(at) if !bytes.is_empty() => {
                bytes.remove(at % bytes.len());
            }
            Mutation::Splice(other, at, from) => {
                let other = &seeds[other % seeds.len()];
                let at = at % (bytes.len() + 1);
                bytes.truncate(at);
                bytes.extend_from_slice(&other[from % (other.len() + 1)..]);
            }
            _ => {}
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to the grammar come often; any byte sometimes.
    let byte = prop_oneof![
        3 => prop::sample::select(b",=tv01 9aF\t".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        (any::<usize>(), byte).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(o, a, f)| Mutation::Splice(o, a, f)),
    ]
}

proptest! {
    #[test]
    fn fuzz_grammar_headers_get_the_schemes_answer(
        items in prop::collection::vec(item(), 0..8),
        pads in prop::collection::vec("[ \t]{0,2}", 8),
        signed_at in NOW - 2 * TOLERANCE as i64..NOW + 100,
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let header = items
            .iter()
            .zip(&pads)
            .map(|(item, pad)| format!("{pad}{}{pad}", item.render(signed_at, &body)))
            .collect::<Vec<_>>()
            .join(",");
        let got = verify(Some(&header), &body, &["whsec_other", SECRET], TOLERANCE, NOW)
            .map(|h| h.timestamp)
            .map_err(|e| std::mem::discriminant(&e));
        prop_assert_eq!(got, expected(&items, signed_at), "{:?}", header);
        check_sound(&header, &body);
    }

    #[test]
    fn fuzz_mutated_corpus_is_never_accepted_unsigned(
        seed in any::<usize>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let bytes = mutate(seeds(), seed, &mutations);
        let header = String::from_utf8_lossy(&bytes);
        let _ = SignatureHeader::parse(&header);
        check_sound(&header, CORPUS_BODY);
    }

    #[test]
    fn fuzz_any_text_never_panics(header in "\\PC{0,300}", body in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = SignatureHeader::parse(&header);
        check_sound(&header, &body);
    }
}
