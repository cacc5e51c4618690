//! The dictionary parser and the phoneme-set reader fed thousands of random and mutated
//! inputs: each must give a dictionary (or set) or a clean error, never a panic, and what
//! they accept must keep the parser's promises (every phoneme in the set, lower-case words,
//! no empty pronunciation, words in order and once each), and go on through the split, the
//! vocabularies and the training pairs.
//!
//! The inputs: the first lines of the shipped dictionary and of its symbol list, with up to
//! eight mutations each (bytes flipped, inserted, deleted, duplicated; the text cut short;
//! tokens the parser treats specially spliced in), random bytes, and random runs of those
//! tokens. The runner's seed is fixed, so every run tries the same inputs.

use padless_g2p::batch::make_pairs;
use padless_g2p::cmudict::{Malformed, PhonemeSet, parse_with};
use padless_g2p::split::{Side, split_by_word};
use padless_g2p::train::vocabularies;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const SYMBOLS: &str = include_str!("../../../data/cmudict/cmudict.symbols");

/// Lines `from..to` of the shipped dictionary.
fn lines(from: usize, to: usize) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/cmudict/cmudict.dict"
    ))
    .unwrap();
    text.lines()
        .skip(from)
        .take(to - from)
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Byte runs that the parser treats specially.
const TOKENS: &[&[u8]] = &[
    b"(",
    b")",
    b"(2)",
    b"(x)",
    b"#",
    b" ",
    b"\t",
    b"\n",
    b"\r\n",
    b"AH0",
    b"AH3",
    b"K1",
    b"ah0",
    b"<pad>",
    b"<s>",
    b"</s>",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\0",
    b"\xc4\xb0",
    b"\xe1\xba\x9e",
    b"'",
    b"-",
    b".",
    b"a(2) EY1\n",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, Index),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<Index>(), 1..40usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1..80usize).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
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
        }
    }
    bytes
}

/// Mutated samples, random bytes and random token runs, in the proportions 6 : 1 : 2, as
/// text (invalid UTF-8 replaced, as a reader of the file would refuse it first).
fn inputs(corpus: Vec<String>) -> impl Strategy<Value = String> {
    let mutated = (
        prop::sample::select(corpus),
        prop::collection::vec(mutation(), 0..8),
    )
        .prop_map(|(sample, ms)| apply(sample.into_bytes(), &ms));
    let random = prop::collection::vec(any::<u8>(), 0..200);
    let tokens =
        prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|ts| ts.concat());
    prop_oneof![6 => mutated, 1 => random, 2 => tokens]
        .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// Parses `text` with `set` under both malformed-line policies and checks what is accepted.
fn parse_and_check(text: &str, set: &PhonemeSet) {
    for policy in [Malformed::Error, Malformed::Skip] {
        let Ok(dict) = parse_with(text, policy, set) else {
            assert_eq!(policy, Malformed::Error, "skipping never fails");
            continue;
        };
        if policy == Malformed::Error {
            assert!(dict.skipped.is_empty());
        }
        for pair in dict.entries.windows(2) {
            assert!(pair[0].word < pair[1].word, "words sorted and unique");
        }
        for entry in &dict.entries {
            assert!(!entry.word.is_empty());
            assert_eq!(entry.word, entry.word.to_lowercase());
            assert!(!entry.pronunciations.is_empty());
            for pronunciation in &entry.pronunciations {
                assert!(!pronunciation.is_empty());
                assert!(pronunciation.iter().all(|p| set.contains(p)), "{entry:?}");
            }
        }
        let split = split_by_word(&dict.entries, 1);
        let words = split.train.len() + split.validation.len() + split.test.len();
        assert_eq!(words, dict.entries.len());
        if split.require(&[Side::Train]).is_ok() {
            let (letters, phonemes) = vocabularies(&split.train);
            let pairs = make_pairs(&split.train, &letters, &phonemes).unwrap();
            assert_eq!(
                pairs.len(),
                split
                    .train
                    .iter()
                    .map(|e| e.pronunciations.len())
                    .sum::<usize>()
            );
        }
    }
}

#[test]
fn the_dictionary_parser_accepts_or_refuses_cleanly_whatever_the_text() {
    let corpus = vec![lines(0, 40), lines(20, 60), lines(70_000, 70_030)];
    let arpabet = PhonemeSet::arpabet();
    let custom = PhonemeSet::parse("k a t AH0 < s > # x\n", "custom").unwrap();
    runner(3000)
        .run(&inputs(corpus), |text| {
            parse_and_check(&text, &arpabet);
            parse_and_check(&text, &custom);
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_phoneme_set_reader_accepts_or_refuses_cleanly_whatever_the_text() {
    let dictionary = lines(0, 20);
    runner(3000)
        .run(&inputs(vec![SYMBOLS.to_string()]), |text| {
            if let Ok(set) = PhonemeSet::parse(&text, "fuzz") {
                assert!(!set.is_empty());
                for symbol in set.symbols() {
                    assert!(!symbol.is_empty() && !symbol.contains(char::is_whitespace));
                    assert!(!symbol.contains('#') && !["<pad>", "<s>", "</s>"].contains(&symbol));
                }
                parse_and_check(&dictionary, &set);
            }
            Ok(())
        })
        .unwrap();
}

#[path = "../../padless/tests/file_fuzz/mod.rs"]
mod file_fuzz;

/// A small G2P model as `G2p::save` writes it and as a training run's checkpoint holds it
/// (the library's checkpoint with the vocabularies and direction in its header).
fn g2p_files() -> Vec<Vec<u8>> {
    use padless::losses::{LossKind, SequenceLoss};
    use padless::seq2seq::{AttentionKind, EncoderDecoder, EncoderDecoderConfig};
    use padless::train::{CompileConfig, Trainer};
    use padless_g2p::G2p;
    use padless_g2p::vocab::{SOURCE_SPECIALS, TARGET_SPECIALS, Vocab};

    let device = padless::training_device();
    device.seed(3);
    let letters = Vocab::new(&SOURCE_SPECIALS, ["a", "b", "c"].map(String::from));
    let phonemes = Vocab::new(&TARGET_SPECIALS, ["K", "AE1", "T"].map(String::from));
    let network = EncoderDecoderConfig {
        n_source_tokens: letters.len(),
        n_target_tokens: phonemes.len(),
        d_embedding: 3,
        d_encoder: 2,
        encoder_layers: 1,
        decoder_layers: 1,
        post_attention_layers: 1,
        attention: AttentionKind::Dot { scaled: false },
        dropout: 0.0,
    }
    .init(&device)
    .unwrap();
    let dir = std::env::temp_dir().join(format!("padless-g2p-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (model_path, checkpoint) = (dir.join("model.safetensors"), dir.join("last.safetensors"));
    let json = |symbols: &[String]| serde_json::to_string(symbols).unwrap();
    let header = vec![
        ("letters".to_string(), json(&letters.symbols)),
        ("phonemes".to_string(), json(&phonemes.symbols)),
        ("direction".to_string(), "left-to-right".to_string()),
    ];
    let compile = CompileConfig::new(SequenceLoss::new(LossKind::SparseCategoricalCrossentropy {
        from_logits: true,
    }));
    Trainer::<EncoderDecoder>::new(network.clone(), compile, &device)
        .unwrap()
        .save_with(&checkpoint, &header)
        .unwrap();
    let model = G2p {
        network: padless_g2p::Network::from(network),
        letters,
        phonemes,
        right_to_left: false,
    };
    model
        .save(&model_path, &[("wer", "0.5".to_string())])
        .unwrap();
    [model_path, checkpoint]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

#[test]
fn g2p_model_files_load_or_fail_cleanly_whatever_the_bytes() {
    use padless_g2p::G2p;

    padless::budget::set_memory_budget(Some(16 << 20)).unwrap();
    let device = padless::default_device();
    let corpus = g2p_files();
    let path = std::env::temp_dir().join(format!(
        "padless-g2p-fuzz-{}/mutated.safetensors",
        std::process::id()
    ));
    for bytes in &corpus {
        std::fs::write(&path, bytes).unwrap();
        let (model, _) = G2p::load(&path, &device).unwrap();
        let words = ["cab".to_string()];
        assert_eq!(model.pronounce(&words, 2, 4, &device).unwrap().len(), 1);
    }
    let strategy = file_fuzz::inputs(corpus, 4, file_fuzz::Container::Safetensors);
    let (loaded, vocabulary) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    file_fuzz::runner(600)
        .run(&strategy, |bytes| {
            std::fs::write(&path, &bytes).unwrap();
            match G2p::load(&path, &device) {
                Ok((model, _)) => {
                    // What loads is consistent: one symbol per id of the network.
                    assert_eq!(
                        model.letters.len(),
                        padless::seq2seq::StepDecoder::n_source_tokens(&model.network)
                    );
                    assert_eq!(
                        model.phonemes.len(),
                        padless::seq2seq::StepDecoder::n_target_tokens(&model.network)
                    );
                    let _ = model.pronounce(&["cab".to_string()], 2, 4, &device);
                    loaded.set(loaded.get() + 1);
                }
                Err(e) if e.to_string().contains("the network has") => {
                    vocabulary.set(vocabulary.get() + 1);
                }
                Err(_) => {}
            }
            Ok(())
        })
        .unwrap();
    // Some mutated files still load, and some are refused for vocabularies that do not fit
    // the network.
    assert!(
        loaded.get() >= 50 && vocabulary.get() >= 5,
        "{} loaded, {} refused for their vocabularies",
        loaded.get(),
        vocabulary.get()
    );
}
