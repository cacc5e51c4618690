//! The data-file readers (JSON Lines, CSV, text), the byte decoding before them and the
//! `vocab.json` reader fed thousands of random and mutated inputs: each must give records or a
//! clean error, never a panic, and what they accept must keep the readers' promises (no empty
//! sequence, no reserved symbol in the data, finite numbers, vectors at least one wide, a
//! vocabulary with its reserved symbols first). Accepted records also go on through the
//! vocabularies and the encoding to examples.
//!
//! The inputs: valid files (the samples in `examples/data` and a few numeric ones) with up to
//! eight mutations each (bytes flipped, inserted, deleted, duplicated; the file cut short;
//! tokens that readers treat specially spliced in), random bytes, and random runs of those
//! tokens. The runner's seed is fixed, so every run tries the same inputs.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::data_files::{Format, RawSeq, Tokens, check_sequence, parse_records};
use crate::encode::{OutputMode, examples};
use crate::paths::decode_text;
use crate::vocab::{Coding, END, RESERVED, UnknownPolicy, Vocabs};

/// The first `n` bytes of a sample, cut at a line end.
fn head(text: &'static str, n: usize) -> &'static str {
    match text.get(..n.min(text.len())).and_then(|h| h.rfind('\n')) {
        Some(end) if n < text.len() => &text[..=end],
        _ => text,
    }
}

fn data_corpus() -> Vec<&'static str> {
    vec![
        head(
            include_str!("../../../examples/data/vowels/train.jsonl"),
            600,
        ),
        head(
            include_str!("../../../examples/data/reverse/train.tsv"),
            300,
        ),
        head(
            include_str!("../../../examples/data/reverse/valid.csv"),
            300,
        ),
        "{\"input\": [[0.5, 1], [2, -3]], \"target\": [[1, 0], [0, 1]]}\n{\"input\": [1, 2.5, 3], \"target\": [\"a\", \"b\", \"c\"]}\n",
        "{\"input\": [\"the\", \"cat\"], \"target\": \"D A\"}\n{\"input\": \"a b\", \"target\": [[1e-3], [3.4e38]]}\n",
        "the cat sat\non the mat\n\n",
        "input,target,weight\n\"a,b\",cd,1\n\"say \"\"hi\"\"\",x,2\n",
    ]
}

const VOCAB_JSON: &str = r#"{
  "format": "padless-vocab-1",
  "tokens": "chars",
  "input": {"kind": "symbols", "vocab": ["<pad>", "</s>", "<unk>", "a", "b", "c"]},
  "target": {"kind": "numbers", "features": 3}
}"#;

/// Byte runs that the readers treat specially.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b",",
    b"\t",
    b"\n",
    b"\r\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b" ",
    b"<pad>",
    b"</s>",
    b"<unk>",
    b"<s>",
    b"\xef\xbb\xbf",
    b"1e39",
    b"-1e400",
    b"3.4e38",
    b"NaN",
    b"[[]]",
    b"[]",
    b"null",
    b"\0",
    b"\xff",
    b"\xc3",
    b"0",
    b"-0.0",
    b"\"\"",
    b"\"input\"",
    b"\"target\"",
    b"\"kind\"",
    b"\"symbols\"",
    b"\"numbers\"",
    b"\"features\"",
    b"input,target",
    b"{\"input\": [[1, 2], [3]], \"target\": \"a\"}",
    b"{\"input\": \"ab\", \"target\": \"cd\"}",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"\xf0\x9f\x98\x80",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, Index),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Truncate(Index),
    Splice(Index, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<Index>(), 1..40usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1..80usize).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Splice(i, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: &Index, len: usize| i.index(len + 1);
        match m {
            Mutation::Flip(i, b) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] ^= b | 1;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, t) => {
                let at = at(i, bytes.len());
                let token = TOKENS[t.index(TOKENS.len())];
                bytes.splice(at..at, token.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = at(i, bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Duplicate(i, n) => {
                let at = at(i, bytes.len());
                let end = (at + n).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(end..end, copy);
            }
            Mutation::Truncate(i) => bytes.truncate(at(i, bytes.len())),
            Mutation::Splice(i, b) => {
                let at = at(i, bytes.len());
                bytes.splice(at..at, b.iter().copied());
            }
        }
    }
    bytes
}

/// Mutated samples, random bytes and random token runs, in the proportions 6 : 1 : 2.
fn inputs(corpus: Vec<&'static str>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        prop::sample::select(corpus),
        prop::collection::vec(mutation(), 0..8),
    )
        .prop_map(|(sample, ms)| apply(sample.as_bytes().to_vec(), &ms));
    let random = prop::collection::vec(any::<u8>(), 0..200);
    let tokens =
        prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|ts| ts.concat());
    prop_oneof![6 => mutated, 1 => random, 2 => tokens]
}

fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

fn check_finite(seq: &RawSeq) {
    if let RawSeq::Numbers(steps) = seq {
        assert!(steps.iter().flatten().all(|x| x.is_finite()), "{seq:?}");
    }
}

/// Whether `target` is what a text line without TABs gives: the input's next symbols, then
/// the end symbol.
fn is_next_symbol(input: &RawSeq, target: &RawSeq) -> bool {
    match (input, target) {
        (RawSeq::Symbols(input), RawSeq::Symbols(target)) => target
            .split_last()
            .is_some_and(|(last, rest)| last == END && rest == &input[1..]),
        _ => false,
    }
}

/// Every format and splitting of one input: records or an error, and what is accepted keeps
/// the readers' promises and encodes without a panic.
fn read_every_way(bytes: &[u8]) {
    let text = match decode_text(bytes.to_vec(), "fuzz") {
        Ok(text) => text,
        Err(err) => {
            assert!(err.to_string().contains("expected UTF-8 text"), "{err}");
            String::from_utf8_lossy(bytes).into_owned()
        }
    };
    for format in [Format::Jsonl, Format::Csv, Format::Text] {
        for tokens in [Tokens::Chars, Tokens::Words] {
            for need_target in [true, false] {
                let Ok(records) = parse_records(&text, "fuzz", format, tokens, need_target) else {
                    continue;
                };
                assert!(!records.is_empty());
                for record in &records {
                    check_sequence(&record.input, "input").unwrap();
                    check_finite(&record.input);
                    match &record.target {
                        Some(target)
                            if format == Format::Text && is_next_symbol(&record.input, target) => {}
                        Some(target) => {
                            check_sequence(target, "target").unwrap();
                            check_finite(target);
                        }
                        None => assert!(!need_target),
                    }
                }
                if !need_target {
                    continue;
                }
                let Ok(vocabs) = Vocabs::build(&records, tokens) else {
                    continue;
                };
                for mode in [
                    OutputMode::PerStep,
                    OutputMode::Fixed(6),
                    OutputMode::Single,
                ] {
                    for policy in [UnknownPolicy::Map, UnknownPolicy::Error] {
                        if let Ok(examples) =
                            examples(&records, Path::new("fuzz"), &vocabs, mode, policy)
                        {
                            assert_eq!(examples.len(), records.len());
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn data_readers_accept_or_refuse_cleanly_whatever_the_bytes() {
    runner(2500)
        .run(&inputs(data_corpus()), |bytes| {
            read_every_way(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_vocab_reader_accepts_only_well_formed_vocabularies() {
    runner(4000)
        .run(&inputs(vec![VOCAB_JSON]), |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(vocabs) = Vocabs::parse(&text) {
                for coding in [&vocabs.input, &vocabs.target] {
                    match coding {
                        Coding::Symbols { vocab } => {
                            let symbols = Vec::<String>::from(vocab.clone());
                            assert_eq!(symbols[..3], RESERVED);
                            let unique: std::collections::HashSet<&String> =
                                symbols.iter().collect();
                            assert_eq!(unique.len(), symbols.len());
                            assert_eq!(vocab.symbol(symbols.len() as i64), RESERVED[2]);
                        }
                        Coding::Numbers { features } => assert!(*features > 0),
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}
