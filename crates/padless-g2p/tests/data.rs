//! The dictionary parser, the split and the error rates, on hand-made cases.

use padless::metrics::{edit_distance, error_rate, sequence_error_rate};
use padless_g2p::G2pError;
use padless_g2p::cmudict::{Malformed, parse};
use padless_g2p::split::{split_by_word, word_hash};

const SAMPLE: &str = "\
'bout B AW1 T
# a whole-line comment
a AH0
a(2) EY1
aalborg AO1 L B AO0 R G # place, danish

aalborg(2) AA1 L B AO0 R G
Zed Z EH1 D
";

#[test]
fn parser_merges_alternates_skips_comments_and_lower_cases() {
    let dict = parse(SAMPLE, Malformed::Error).unwrap();
    let words: Vec<&str> = dict.entries.iter().map(|e| e.word.as_str()).collect();
    assert_eq!(words, ["'bout", "a", "aalborg", "zed"]);
    assert_eq!(dict.entries[1].pronunciations, [vec!["AH0"], vec!["EY1"]]);
    assert_eq!(
        dict.entries[2].pronunciations[0],
        ["AO1", "L", "B", "AO0", "R", "G"],
        "the comment is not a phoneme"
    );
    assert_eq!(dict.n_pronunciations(), 6);
    assert!(dict.skipped.is_empty());
}

#[test]
fn malformed_lines_are_an_error_with_their_number_or_skipped_and_counted() {
    let text = "good G UH1 D\nlonely\nbad(x) B AE1 D\nlower b ae1 d\nfine F AY1 N\n";
    let err = parse(text, Malformed::Error).unwrap_err();
    match &err {
        G2pError::Malformed { line, reason, .. } => {
            assert_eq!(*line, 2);
            assert!(reason.contains("expected phonemes"), "{reason}");
        }
        other => panic!("expected Malformed, found {other:?}"),
    }
    assert!(err.to_string().starts_with("line 2:"), "{err}");
    let dict = parse(text, Malformed::Skip).unwrap();
    assert_eq!(dict.entries.len(), 2);
    let lines: Vec<usize> = dict.skipped.iter().map(|s| s.0).collect();
    assert_eq!(lines, [2, 3, 4]);
    assert!(
        dict.skipped[1].1.contains("`bad(x)`"),
        "{:?}",
        dict.skipped[1]
    );
    assert!(dict.skipped[2].1.contains("`b`"), "{:?}", dict.skipped[2]);
}

#[test]
fn split_is_deterministic_word_disjoint_and_about_90_5_5() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/cmudict/cmudict.dict"
    ))
    .unwrap();
    let dict = parse(&text, Malformed::Error).unwrap();
    let a = split_by_word(&dict.entries, 1);
    let mut shuffled = dict.entries.clone();
    shuffled.reverse();
    let b = split_by_word(&shuffled, 1);
    let words = |v: &[padless_g2p::cmudict::Entry]| {
        let mut w: Vec<String> = v.iter().map(|e| e.word.clone()).collect();
        w.sort();
        w
    };
    assert_eq!(words(&a.test), words(&b.test), "independent of file order");
    assert_eq!(words(&a.train), words(&b.train));
    let train: std::collections::HashSet<_> = a.train.iter().map(|e| &e.word).collect();
    assert!(
        a.validation
            .iter()
            .chain(&a.test)
            .all(|e| !train.contains(&e.word))
    );
    let n = dict.entries.len() as f64;
    let fractions = [
        a.train.len() as f64 / n,
        a.validation.len() as f64 / n,
        a.test.len() as f64 / n,
    ];
    assert!((fractions[0] - 0.90).abs() < 0.01, "{fractions:?}");
    assert!((fractions[1] - 0.05).abs() < 0.005, "{fractions:?}");
    assert!((fractions[2] - 0.05).abs() < 0.005, "{fractions:?}");
    // Alternates travel with their word.
    let read = a
        .train
        .iter()
        .chain(&a.validation)
        .chain(&a.test)
        .find(|e| e.word == "read");
    assert_eq!(read.unwrap().pronunciations.len(), 2);
    // Another seed, another split.
    assert_ne!(words(&split_by_word(&dict.entries, 2).test), words(&a.test));
}

#[test]
fn word_hash_is_fnv1a_over_seed_then_word() {
    // FNV-1a 64 of the 8 zero bytes of seed 0 followed by "a", worked out by hand from the
    // offset basis 0xcbf29ce484222325 and the prime 0x100000001b3 (see split.rs).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in [0u8, 0, 0, 0, 0, 0, 0, 0, b'a'] {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    assert_eq!(word_hash(0, "a"), h);
    assert_ne!(word_hash(0, "a"), word_hash(1, "a"));
}

fn ph(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[test]
fn wer_and_per_use_the_closest_of_several_references() {
    assert_eq!(edit_distance(&ph("K AE1 T"), &ph("K AA1 T S")), 2);
    // "read": output R EH1 D equals the second reference: no word error, no phoneme error.
    // "cat": output K AE1 T S against K AE1 T: one insertion over 3 phonemes.
    // "dog": output D AO1 against D AO1 G or D AA1 G: closest is D AO1 G, 1 deletion over 3.
    let outputs = vec![ph("R EH1 D"), ph("K AE1 T S"), ph("D AO1")];
    let references = vec![
        vec![ph("R IY1 D"), ph("R EH1 D")],
        vec![ph("K AE1 T")],
        vec![ph("D AA1 G"), ph("D AO1 G")],
    ];
    let wer = sequence_error_rate(&outputs, &references).unwrap();
    assert!((wer - 2.0 / 3.0).abs() < 1e-12, "{wer}");
    let per = error_rate(&outputs, &references).unwrap();
    assert!((per - 2.0 / 9.0).abs() < 1e-12, "{per}");
}
