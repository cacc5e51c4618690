//! The bad-input catalogue: data files, dictionaries, phoneme sets, vocabularies, flags and
//! paths that a careless or hostile user gives the `padless` binary. Each case creates its
//! files in a folder of its own, runs one command there and checks that the process
//!
//! - ends with the expected exit code (1 for a refused input, 2 for a flag clap refuses),
//!   not by a signal (an abort on a failed allocation, a crash);
//! - prints no panic, and exactly one error line (`padless: ...` or clap's `error: ...`)
//!   that contains the expected text (what was expected and what was found, with the file
//!   and line where there is one);
//! - leaves every file of the folder as it was, and no temporary file behind.
//!
//! Some cases need a trained run (a checkpoint with its `vocab.json` and `training.json`) or
//! a G2P model: those are made once, then copied into the cases' folders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A tiny tagger: letters (or words) in, one tag per letter out.
const TAGGER: &[u8] = br#"{"input": {"kind": "tokens"}, "layers": [
    {"type": "embedding", "d_model": 8, "mask_zero": true},
    {"type": "gru", "units": 8, "return_sequences": true},
    {"type": "time_distributed_dense", "units": "vocab", "activation": "softmax"}],
  "training": {"learning_rate": 0.02}}"#;

/// The same tagger over vectors of numbers (the input's width filled from the data).
const VECTOR_TAGGER: &[u8] = br#"{"layers": [
    {"type": "masking", "mask_value": 0.0},
    {"type": "gru", "units": 8, "return_sequences": true},
    {"type": "time_distributed_dense", "units": "vocab", "activation": "softmax"}]}"#;

/// Letters in, `v` (vowel) or `c` (consonant) per letter out.
const LETTERS: &[u8] =
    b"banana\tcvcvcv\nkiwi\tcvcv\napple\tvccvv\nfig\tcvc\ngrape\tccvcv\nlemon\tcvcvc\n";

/// Words in, a tag per word out (`--tokens words`).
const WORDS: &[u8] = b"the cat sat\tD N V\na dog ran\tD N V\nthe dog\tD N\n";

/// Vectors of 2 numbers in, a symbol per step out.
const VECTORS: &[u8] = b"{\"input\": [[0.5, 1], [1, 0.25]], \"target\": \"ab\"}\n{\"input\": [[1, 1]], \"target\": \"b\"}\n";

/// Three words that all fall on the train side of the split (seed 1).
const TRAIN_ONLY_DICT: &[u8] = b"cat K AE1 T\ndog D AO1 G\ncow K AW1\n";

/// The words whose letters and phonemes the G2P model of the cases knows: those above and
/// `yak`, which falls on the test side (seed 1).
const MODEL_DICT: &[u8] = b"cat K AE1 T\ndog D AO1 G\ncow K AW1\nyak Y AE1 K\n";

/// A process id that no running process has: above Linux's largest (2^22).
const DEAD_PID: u32 = 4_194_304 + 17;

/// A trained run copied into a case's folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Run {
    /// The letter tagger.
    Letters,
    /// The word tagger (`--tokens words`).
    Words,
    /// The vector tagger.
    Vectors,
    /// The letter tagger trained with a validation split (its best checkpoint by
    /// `val_loss`).
    Validated,
}

/// What a case's folder holds before the command runs, made in order.
#[derive(Clone, Copy, Debug)]
enum Item {
    /// A file and its bytes.
    File(&'static str, &'static [u8]),
    /// A folder.
    Folder(&'static str),
    /// A symbolic link and its target.
    Symlink(&'static str, &'static str),
    /// A hard link and the file it links.
    HardLink(&'static str, &'static str),
    /// A copy of a trained run's files in this folder.
    Run(&'static str, Run),
    /// A small G2P model (its letters and phonemes from [`MODEL_DICT`]).
    G2pModel(&'static str),
    /// The first 200 lines of the shipped dictionary: words on every side of the split.
    Dictionary(&'static str),
    /// A file removed (from a copied run).
    Remove(&'static str),
    /// A file copied over another (a checkpoint of one run into another's folder).
    Copy(&'static str, &'static str),
    /// A safetensors file's header entry edited: `(file, entry, path, value)`. With an empty
    /// path the entry becomes `value`; else the entry is JSON and the value at the dotted
    /// path (`layers.1.units`) becomes the JSON `value`. [`REMOVE`] removes it instead.
    Header(&'static str, &'static str, &'static str, &'static str),
}

/// The value of a [`Header`] edit that removes the entry or key.
const REMOVE: &str = "<remove>";

use Item::*;

#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    setup: &'static [&'static [Item]],
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    code: i32,
    error: &'static str,
}

const fn case(
    name: &'static str,
    setup: &'static [&'static [Item]],
    args: &'static [&'static str],
    code: i32,
    error: &'static str,
) -> Case {
    Case {
        name,
        setup,
        args,
        env: &[],
        code,
        error,
    }
}

impl Case {
    const fn env(self, env: &'static [(&'static str, &'static str)]) -> Case {
        Case { env, ..self }
    }
}

/// A refused input.
const REFUSED: i32 = 1;
/// A flag that clap refuses.
const USAGE: i32 = 2;

const TRAIN: &[Item] = &[File("tagger.json", TAGGER), File("d.tsv", LETTERS)];
const DICT: &[Item] = &[Dictionary("dict.txt")];
const EVAL: &[Item] = &[
    Dictionary("dict.txt"),
    File("m.safetensors", b"not a model"),
];
const LETTER_RUN: &[Item] = &[Run("run", Run::Letters)];
const WORD_RUN: &[Item] = &[Run("run", Run::Words)];
const VECTOR_RUN: &[Item] = &[Run("run", Run::Vectors)];
const MODEL: &[Item] = &[
    G2pModel("m.safetensors"),
    File("tiny.dict", TRAIN_ONLY_DICT),
];

/// `padless train` on the tagger config with `$data` as the data file.
macro_rules! train_on {
    ($data:literal) => {
        &["train", "--config", "tagger.json", "--data", $data, "--out", "run"]
    };
    ($data:literal, $($more:literal),+) => {
        &["train", "--config", "tagger.json", "--data", $data, "--out", "run", $($more),+]
    };
}

/// The shipped dictionary, which `g2p` reads when `--data` is left out.
const SHIPPED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/cmudict/cmudict.dict"
);

const CASES: &[Case] = &[
    // Paths: an output that is an input of the same command, or cannot be written.
    case("train --out over a data file", &[TRAIN],
        &["train", "--config", "tagger.json", "--data", "d.tsv", "--out", "d.tsv"], REFUSED,
        "--out d.tsv: expected a folder for the run's files, found a file"),
    case("train --data inside the run it writes", &[TRAIN, &[File("run/log.csv", LETTERS)]],
        train_on!("run/log.csv"), REFUSED,
        "--out run's log.csv is the same file as --data run/log.csv"),
    case("train --config is the run's training.json", &[TRAIN, &[File("run/training.json", TAGGER)]],
        &["train", "--config", "run/training.json", "--data", "d.tsv", "--out", "run"], REFUSED,
        "--out run's training.json is the same file as --config run/training.json"),
    case("train --validation is the run's vocab.json", &[TRAIN, &[File("run/vocab.json", LETTERS)]],
        train_on!("d.tsv", "--validation", "run/vocab.json"), REFUSED,
        "--out run's vocab.json is the same file as --validation run/vocab.json"),
    case("train log hard-linked to the data", &[TRAIN, &[Folder("run"), HardLink("run/log.csv", "d.tsv")]],
        train_on!("d.tsv"), REFUSED, "run's log.csv is the same file as --data d.tsv"),
    case("train --data through a folder link into the run", &[TRAIN, &[File("run/best.safetensors", LETTERS), Symlink("alias", "run")]],
        train_on!("alias/best.safetensors"), REFUSED,
        "--out run's best.safetensors is the same file as --data alias/best.safetensors"),
    case("train --out inside a file", &[TRAIN],
        &["train", "--config", "tagger.json", "--data", "d.tsv", "--out", "d.tsv/run"], REFUSED,
        "creating d.tsv/run"),
    case("g2p train --out is the dictionary", &[DICT],
        &["g2p", "train", "--data", "dict.txt", "--out", "dict.txt"], REFUSED,
        "--out dict.txt is the same file as --data dict.txt"),
    case("g2p train --out links to the dictionary", &[DICT, &[Symlink("link.safetensors", "dict.txt")]],
        &["g2p", "train", "--data", "dict.txt", "--out", "link.safetensors"], REFUSED,
        "--out link.safetensors is the same file as --data dict.txt"),
    case("g2p train --out is a hard link of the dictionary", &[DICT, &[HardLink("hard.safetensors", "dict.txt")]],
        &["g2p", "train", "--data", "dict.txt", "--out", "hard.safetensors"], REFUSED,
        "a hard link of it"),
    case("g2p train --out spelled through ..", &[DICT, &[Folder("sub")]],
        &["g2p", "train", "--data", "dict.txt", "--out", "sub/../dict.txt"], REFUSED,
        "--out sub/../dict.txt is the same file as --data dict.txt"),
    case("g2p train --out is the shipped dictionary", &[],
        &["g2p", "train", "--out", SHIPPED], REFUSED, "is the same file as --data"),
    case("g2p train: an LSTM flag for a Transformer", &[DICT],
        &["g2p", "train", "--data", "dict.txt", "--model", "transformer", "--hidden", "8"], REFUSED,
        "--hidden sets an LSTM network, found --model transformer"),
    case("g2p train: a Transformer flag for an LSTM", &[DICT],
        &["g2p", "train", "--data", "dict.txt", "--d-ff", "8"], REFUSED,
        "--d-ff sets a Transformer network, found --model lstm"),
    case("g2p train: a width that heads do not divide", &[DICT],
        &["g2p", "train", "--data", "dict.txt", "--model", "transformer", "--d-model", "30", "--heads", "4"], REFUSED,
        "--d-model must be a multiple of --heads, found 30 and 4"),
    case("g2p train: no large Transformer preset", &[DICT],
        &["g2p", "train", "--data", "dict.txt", "--model", "transformer", "--preset", "large"], REFUSED,
        "--model transformer has the presets quick and full, found --preset large"),
    case("g2p train --out is the phoneme set", &[DICT, &[File("set.txt", b"K AE1 T\n")]],
        &["g2p", "train", "--data", "dict.txt", "--phonemes", "set.txt", "--out", "set.txt"], REFUSED,
        "--out set.txt is the same file as --phonemes set.txt"),
    case("g2p train --out is a folder", &[DICT, &[Folder("models")]],
        &["g2p", "train", "--data", "dict.txt", "--out", "models"], REFUSED,
        "--out models: expected a file to write, found a folder"),
    case("g2p train --out in a missing folder", &[DICT],
        &["g2p", "train", "--data", "dict.txt", "--out", "nowhere/m.safetensors"], REFUSED,
        "--out nowhere/m.safetensors: expected an existing folder nowhere to write it in, found none"),
    case("g2p eval --errors is the dictionary", &[EVAL],
        &["g2p", "eval", "--data", "dict.txt", "--model", "m.safetensors", "--errors", "dict.txt"], REFUSED,
        "--errors dict.txt is the same file as --data dict.txt"),
    case("g2p eval --errors is the model", &[EVAL],
        &["g2p", "eval", "--data", "dict.txt", "--model", "m.safetensors", "--errors", "m.safetensors"], REFUSED,
        "--errors m.safetensors is the same file as --model m.safetensors"),
    case("g2p eval --errors is the second model", &[EVAL, &[File("b.safetensors", b"another")]],
        &["g2p", "eval", "--data", "dict.txt", "--model", "m.safetensors", "--model", "b.safetensors", "--errors", "./b.safetensors"], REFUSED,
        "--errors ./b.safetensors is the same file as --model b.safetensors"),
    case("g2p eval --errors is the phoneme set", &[EVAL, &[File("set.txt", b"K AE1 T\n")]],
        &["g2p", "eval", "--data", "dict.txt", "--phonemes", "set.txt", "--model", "m.safetensors", "--errors", "set.txt"], REFUSED,
        "--errors set.txt is the same file as --phonemes set.txt"),
    case("g2p eval --errors is the shipped dictionary", &[EVAL],
        &["g2p", "eval", "--model", "m.safetensors", "--errors", SHIPPED], REFUSED,
        "is the same file as --data"),
    case("g2p eval --errors is a folder", &[EVAL, &[Folder("out")]],
        &["g2p", "eval", "--data", "dict.txt", "--model", "m.safetensors", "--errors", "out"], REFUSED,
        "--errors out: expected a file to write, found a folder"),
    case("g2p eval --errors in a missing folder", &[EVAL],
        &["g2p", "eval", "--data", "dict.txt", "--model", "m.safetensors", "--errors", "no/e.tsv"], REFUSED,
        "expected an existing folder no to write it in, found none"),
    // Data files: reserved symbols, numbers, structure.
    case("a data symbol spelled <pad>", &[TRAIN, &[File("x.tsv", b"the cat\tD N\na <pad>\tD N\n")]],
        train_on!("x.tsv", "--tokens", "words"), REFUSED,
        "x.tsv:2: input symbol \"<pad>\" at step 1 is reserved"),
    case("a data symbol spelled </s>", &[TRAIN, &[File("x.jsonl", b"{\"input\": [\"a\", \"</s>\"], \"target\": [\"c\", \"v\"]}\n")]],
        train_on!("x.jsonl"), REFUSED, "x.jsonl:1: input symbol \"</s>\" at step 1 is reserved"),
    case("a target symbol spelled <unk>", &[TRAIN, &[File("x.csv", b"input,target\na b,D <unk>\n")]],
        train_on!("x.csv", "--tokens", "words"), REFUSED, "x.csv:2: target symbol \"<unk>\" at step 1 is reserved"),
    case("a reserved symbol in a next-symbol file", &[TRAIN, &[File("x.txt", b"a b <pad> c\n")]],
        train_on!("x.txt", "--tokens", "words"), REFUSED, "x.txt:1: input symbol \"<pad>\" at step 2 is reserved"),
    case("a reserved symbol in the validation file", &[TRAIN, &[File("w.tsv", WORDS), File("v.tsv", b"the </s>\tD N\n")]],
        train_on!("w.tsv", "--validation", "v.tsv", "--tokens", "words"), REFUSED,
        "v.tsv:1: input symbol \"</s>\" at step 1 is reserved"),
    case("an empty symbol", &[TRAIN, &[File("x.jsonl", b"{\"input\": [\"a\", \"\"], \"target\": \"cv\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "x.jsonl:1: expected input symbols of at least 1 character, found an empty one at step 1"),
    case("a number beyond f32", &[TRAIN, &[File("x.jsonl", b"{\"input\": [1e39, 2], \"target\": \"ab\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "x.jsonl:1: \"input\": expected finite numbers that fit in 32 bits"),
    case("a negative number beyond f32 in a vector", &[TRAIN, &[File("x.jsonl", b"{\"input\": [[1, 2], [3, -1e39]], \"target\": \"ab\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "found -1e+39 at step 1"),
    case("a target number beyond f32", &[TRAIN, &[File("x.jsonl", b"{\"input\": \"ab\", \"target\": [[0], [4e38]]}\n")]],
        train_on!("x.jsonl"), REFUSED, "x.jsonl:1: \"target\": expected finite numbers"),
    case("a number beyond f64", &[TRAIN, &[File("x.jsonl", b"{\"input\": [1e400], \"target\": \"a\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "x.jsonl:1: expected a JSON object {\"input\": ..., \"target\": ...}, found invalid JSON (number out of range"),
    case("NaN in JSON", &[TRAIN, &[File("x.jsonl", b"{\"input\": [NaN], \"target\": \"a\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "x.jsonl:1: expected a JSON object {\"input\": ..., \"target\": ...}, found invalid JSON"),
    case("a vector of no numbers", &[TRAIN, &[File("x.jsonl", b"{\"input\": [[]], \"target\": \"a\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "x.jsonl:1: expected input vectors of at least 1 number, found an empty one at step 0"),
    case("ragged vectors", &[TRAIN, &[File("x.jsonl", b"{\"input\": [[1, 2], [3]], \"target\": \"ab\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "expected vectors of 2 numbers like step 0, found 1 at step 1"),
    case("vector widths differ across lines", &[TRAIN, &[File("x.jsonl", b"{\"input\": [[1, 2]], \"target\": \"a\"}\n{\"input\": [[1, 2, 3]], \"target\": \"a\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "line 2: expected input vectors of 2 numbers as on line 1, found 3"),
    case("numbers then symbols across lines", &[TRAIN, &[File("x.jsonl", b"{\"input\": [1, 2], \"target\": \"ab\"}\n{\"input\": \"ab\", \"target\": \"ab\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "line 2: expected input of the same kind as on line 1"),
    case("a JSON line that is an array", &[TRAIN, &[File("x.jsonl", b"[1, 2]\n")]],
        train_on!("x.jsonl"), REFUSED, "x.jsonl:1: expected a JSON object with \"input\", found an array"),
    case("input null", &[TRAIN, &[File("x.jsonl", b"{\"input\": null, \"target\": \"a\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "\"input\": expected a string, an array of symbols, of numbers or of number arrays, found null"),
    case("input an object", &[TRAIN, &[File("x.jsonl", b"{\"input\": {}, \"target\": \"a\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "found an object"),
    case("input an empty string", &[TRAIN, &[File("x.jsonl", b"{\"input\": \"\", \"target\": \"a\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "x.jsonl:1: expected a non-empty input, found an empty one"),
    case("symbols mixed with a number", &[TRAIN, &[File("x.jsonl", b"{\"input\": [\"a\", 1], \"target\": \"ab\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "found a string at step 0"),
    case("no target field", &[TRAIN, &[File("x.jsonl", b"{\"input\": \"ab\"}\n")]],
        train_on!("x.jsonl"), REFUSED, "x.jsonl:1: expected a field \"target\""),
    case("a truncated JSON line", &[TRAIN, &[File("x.jsonl", b"{\"input\": \"ab\", \"target\": \"cv\"}\n{\"input\": \"ab\", \"tar")]],
        train_on!("x.jsonl"), REFUSED, "x.jsonl:2: expected a JSON object"),
    case("JSON nested too deep", &[TRAIN, &[File("x.jsonl", &[b'['; 4096])]],
        train_on!("x.jsonl"), REFUSED, "x.jsonl:1: expected a JSON object {\"input\": ..., \"target\": ...}, found invalid JSON (recursion limit exceeded"),
    case("an empty CSV file", &[TRAIN, &[File("x.csv", b"")]],
        train_on!("x.csv"), REFUSED, "x.csv: expected a header line, found an empty file"),
    case("a CSV header without input", &[TRAIN, &[File("x.csv", b"in,out\nab,cv\n")]],
        train_on!("x.csv"), REFUSED, "x.csv:1: expected a header naming the columns input and target"),
    case("a CSV without a target column", &[TRAIN, &[File("x.csv", b"input\nab\n")]],
        train_on!("x.csv"), REFUSED, "x.csv:1: expected a target column"),
    case("an unclosed CSV quote", &[TRAIN, &[File("x.csv", b"input,target\n\"ab,cv\n")]],
        train_on!("x.csv"), REFUSED, "x.csv:2: expected a closing quote"),
    case("a stray CSV quote", &[TRAIN, &[File("x.csv", b"input,target\n\"ab\"c,cv\n")]],
        train_on!("x.csv"), REFUSED, "x.csv:2: expected a comma after a closing quote, found 'c'"),
    case("a CSV row too short", &[TRAIN, &[File("x.csv", b"input,target\nab\n")]],
        train_on!("x.csv"), REFUSED, "x.csv:2: expected at least 2 fields as the header says, found 1"),
    case("an empty CSV target", &[TRAIN, &[File("x.csv", b"input,target\nab,\n")]],
        train_on!("x.csv"), REFUSED, "x.csv:2: expected a non-empty target, found an empty one"),
    case("a text line without its TAB", &[TRAIN, &[File("x.tsv", b"ab\tcv\nabc\n")]],
        train_on!("x.tsv"), REFUSED, "x.tsv:2: expected input<TAB>target (other lines have TABs), found no TAB"),
    case("a text line with two TABs", &[TRAIN, &[File("x.tsv", b"ab\tcv\tx\n")]],
        train_on!("x.tsv"), REFUSED, "x.tsv:1: expected input<TAB>target, found 3 TAB-separated fields"),
    case("an empty text target", &[TRAIN, &[File("x.tsv", b"ab\t\n")]],
        train_on!("x.tsv"), REFUSED, "x.tsv:1: expected a non-empty target"),
    case("a tag per letter missing", &[TRAIN, &[File("x.tsv", b"ab\tcvc\n")]],
        train_on!("x.tsv"), REFUSED, "x.tsv:1: expected a target of 2 steps like the input"),
    case("an empty data file", &[TRAIN, &[File("x.txt", b"")]],
        train_on!("x.txt"), REFUSED, "x.txt: expected at least one example, found none"),
    case("a data file of a byte-order mark only", &[TRAIN, &[File("x.txt", "\u{feff}".as_bytes())]],
        train_on!("x.txt"), REFUSED, "x.txt: expected at least one example, found none"),
    case("a data file of blank lines", &[TRAIN, &[File("x.txt", b"\n  \n\t\n\r\n")]],
        train_on!("x.txt"), REFUSED, "x.txt: expected at least one example, found none"),
    case("a data file that is not UTF-8", &[TRAIN, &[File("x.tsv", b"ab\tcv\n\xff\tc\n")]],
        train_on!("x.tsv"), REFUSED, "x.tsv:2: expected UTF-8 text, found the byte 0xff"),
    case("a data file that is a folder", &[TRAIN, &[Folder("x")]],
        train_on!("x"), REFUSED, "reading x: expected a file, found a folder"),
    case("a missing data file", &[TRAIN], train_on!("missing.tsv"), REFUSED, "reading missing.tsv"),
    case("an endless data file", &[TRAIN], train_on!("/dev/zero"), REFUSED,
        "reading /dev/zero (each byte of text takes up to 48 bytes once read): 21846 elements of 48 bytes need")
        .env(&[("PADLESS_MEMORY_BUDGET", "1M")]),
    case("a data file over the memory budget", &[TRAIN], train_on!("d.tsv"), REFUSED,
        "more than the memory budget of 1 KiB").env(&[("PADLESS_MEMORY_BUDGET", "1K")]),
    case("a memory budget that is not a size", &[TRAIN], train_on!("d.tsv"), REFUSED,
        "PADLESS_MEMORY_BUDGET: expected a size such as 8G, 512M, 1.5GiB or a number of bytes, found \"plenty\"")
        .env(&[("PADLESS_MEMORY_BUDGET", "plenty")]),
    case("a memory budget of 0", &[TRAIN], train_on!("d.tsv"), REFUSED, "of at least 1 byte")
        .env(&[("PADLESS_MEMORY_BUDGET", "0")]),
    case("an unknown validation symbol", &[TRAIN, &[File("v.tsv", b"xyz\tccc\n")]],
        train_on!("d.tsv", "--validation", "v.tsv"), REFUSED, "v.tsv:1: unknown symbol \"x\""),
    case("a text file read as JSON Lines", &[TRAIN], train_on!("d.tsv", "--format", "jsonl"), REFUSED,
        "d.tsv:1: expected a JSON object"),
    // Train flags.
    case("--validation-split 1", &[TRAIN], train_on!("d.tsv", "--validation-split", "1"), REFUSED,
        "--validation-split: expected a fraction in [0, 1), found 1"),
    case("--validation-split NaN", &[TRAIN], train_on!("d.tsv", "--validation-split", "NaN"), REFUSED,
        "--validation-split: expected a fraction in [0, 1), found NaN"),
    case("--validation-split negative", &[TRAIN], train_on!("d.tsv", "--validation-split=-0.1"), REFUSED,
        "--validation-split: expected a fraction in [0, 1), found -0.1"),
    case("--epochs 0", &[TRAIN], train_on!("d.tsv", "--epochs", "0"), USAGE,
        "expected a number of epochs from 1 to 4294967295, found \"0\""),
    case("--epochs at u64's largest", &[TRAIN], train_on!("d.tsv", "--epochs", "18446744073709551615"), USAGE,
        "expected a number of epochs from 1 to 4294967295"),
    case("--epochs beyond u64", &[TRAIN], train_on!("d.tsv", "--epochs", "99999999999999999999999"), USAGE,
        "expected a number of epochs from 1 to 4294967295"),
    case("--batch-size 0", &[TRAIN], train_on!("d.tsv", "--batch-size", "0"), USAGE,
        "expected a whole number of at least 1, found 0"),
    case("--batch-size negative", &[TRAIN], train_on!("d.tsv", "--batch-size=-3"), USAGE,
        "expected a whole number, found \"-3\""),
    case("--format unknown", &[TRAIN], train_on!("d.tsv", "--format", "xml"), USAGE, "invalid value 'xml'"),
    case("--tokens unknown", &[TRAIN], train_on!("d.tsv", "--tokens", "bytes"), USAGE, "invalid value 'bytes'"),
    case("train without --config or --resume", &[TRAIN], &["train", "--data", "d.tsv", "--out", "run"], USAGE,
        "--config"),
    // Evaluate and predict.
    case("evaluate --batch-size 0", &[LETTER_RUN, TRAIN],
        &["evaluate", "--checkpoint", "run", "--data", "d.tsv", "--batch-size", "0"], USAGE, "at least 1, found 0"),
    case("predict --batch-size 0", &[LETTER_RUN],
        &["predict", "--checkpoint", "run", "--input", "ab", "--batch-size", "0"], USAGE, "at least 1, found 0"),
    case("predict --input inf", &[VECTOR_RUN],
        &["predict", "--checkpoint", "run", "--input", "[[1e39, 0]]"], REFUSED,
        "--input: \"input\": expected finite numbers that fit in 32 bits (at most about 3.4e38 in size), found 1e+39 at step 0"),
    case("predict --input NaN", &[VECTOR_RUN],
        &["predict", "--checkpoint", "run", "--input", "[[NaN, 0]]"], REFUSED,
        "--input: expected a JSON array of numbers or number arrays"),
    case("predict --input a vector of no numbers", &[VECTOR_RUN],
        &["predict", "--checkpoint", "run", "--input", "[[]]"], REFUSED,
        "--input: expected input vectors of at least 1 number, found an empty one at step 0"),
    case("predict --input of another width", &[VECTOR_RUN],
        &["predict", "--checkpoint", "run", "--input", "[[1, 2, 3]]"], REFUSED,
        "--input: expected input vectors of 2 numbers, found 3 at step 0"),
    case("predict --input symbols for vectors", &[VECTOR_RUN],
        &["predict", "--checkpoint", "run", "--input", "abc"], REFUSED,
        "--input: expected a JSON array of numbers or number arrays"),
    case("predict --input empty", &[LETTER_RUN],
        &["predict", "--checkpoint", "run", "--input", ""], REFUSED,
        "--input: expected a non-empty sequence, found an empty one"),
    case("predict --input with a reserved symbol", &[WORD_RUN],
        &["predict", "--checkpoint", "run", "--input", "the <unk>"], REFUSED,
        "--input: input symbol \"<unk>\" at step 1 is reserved"),
    case("predict --data with inf", &[VECTOR_RUN, &[File("x.jsonl", b"{\"input\": [[0.5, 1]]}\n{\"input\": [[1, 1e39]]}\n")]],
        &["predict", "--checkpoint", "run", "--data", "x.jsonl"], REFUSED,
        "x.jsonl:2: \"input\": expected finite numbers"),
    case("evaluate --data with a reserved symbol", &[WORD_RUN, &[File("x.tsv", b"the <pad>\tD N\n")]],
        &["evaluate", "--checkpoint", "run", "--data", "x.tsv"], REFUSED,
        "x.tsv:1: input symbol \"<pad>\" at step 1 is reserved"),
    case("evaluate --data not UTF-8", &[LETTER_RUN, &[File("x.tsv", b"\xc3(\tcv\n")]],
        &["evaluate", "--checkpoint", "run", "--data", "x.tsv"], REFUSED,
        "x.tsv:1: expected UTF-8 text, found the byte 0xc3"),
    case("evaluate a missing checkpoint", &[TRAIN],
        &["evaluate", "--checkpoint", "nope.safetensors", "--data", "d.tsv"], REFUSED,
        "nope.safetensors: no such checkpoint"),
    case("vocab.json missing", &[LETTER_RUN, &[Remove("run/vocab.json")]],
        &["predict", "--checkpoint", "run", "--input", "ab"], REFUSED,
        "reading run/vocab.json: no such file (train writes it beside the checkpoints)"),
    case("vocab.json with its reserved symbols out of order", &[LETTER_RUN, &[File("run/vocab.json",
        br#"{"format": "padless-vocab-1", "tokens": "chars", "input": {"kind": "symbols", "vocab": ["</s>", "<pad>", "<unk>", "a", "b"]}, "target": {"kind": "symbols", "vocab": ["<pad>", "</s>", "<unk>", "c", "v"]}}"#)]],
        &["predict", "--checkpoint", "run", "--input", "ab"], REFUSED,
        "parsing run/vocab.json: expected a vocabulary starting with the reserved symbols"),
    case("vocab.json with a symbol twice", &[LETTER_RUN, &[File("run/vocab.json",
        br#"{"format": "padless-vocab-1", "tokens": "chars", "input": {"kind": "symbols", "vocab": ["<pad>", "</s>", "<unk>", "a", "b"]}, "target": {"kind": "symbols", "vocab": ["<pad>", "</s>", "<unk>", "c", "c"]}}"#)]],
        &["predict", "--checkpoint", "run", "--input", "ab"], REFUSED,
        "expected each symbol once, found \"c\" again at id 4"),
    case("vocab.json with vectors of no numbers", &[VECTOR_RUN, &[File("run/vocab.json",
        br#"{"format": "padless-vocab-1", "tokens": "chars", "input": {"kind": "numbers", "features": 0}, "target": {"kind": "symbols", "vocab": ["<pad>", "</s>", "<unk>", "a", "b"]}}"#)]],
        &["predict", "--checkpoint", "run", "--input", "[[1, 2]]"], REFUSED,
        "input: expected vectors of at least 1 number, found \"features\": 0"),
    case("vocab.json of another format", &[LETTER_RUN, &[File("run/vocab.json",
        br#"{"format": "padless-vocab-9", "tokens": "chars", "input": {"kind": "numbers", "features": 2}, "target": {"kind": "numbers", "features": 2}}"#)]],
        &["predict", "--checkpoint", "run", "--input", "ab"], REFUSED,
        "expected format padless-vocab-1, found padless-vocab-9"),
    case("vocab.json that is not JSON", &[LETTER_RUN, &[File("run/vocab.json", b"<pad> </s> <unk>")]],
        &["predict", "--checkpoint", "run", "--input", "ab"], REFUSED, "parsing run/vocab.json: expected value"),
    case("vocab.json that is not UTF-8", &[LETTER_RUN, &[File("run/vocab.json", b"{\"format\": \"\xfe\"}")]],
        &["predict", "--checkpoint", "run", "--input", "ab"], REFUSED,
        "run/vocab.json:1: expected UTF-8 text, found the byte 0xfe"),
    case("vocab.json that is a folder", &[LETTER_RUN, &[Remove("run/vocab.json"), Folder("run/vocab.json")]],
        &["predict", "--checkpoint", "run", "--input", "ab"], REFUSED,
        "reading run/vocab.json: expected a file, found a folder"),
    // Bench and demo flags.
    case("bench --threads 0", &[], &["bench", "--threads", "0"], USAGE, "expected 1 to"),
    case("bench --threads 3", &[], &["bench", "--threads", "3"], USAGE, "the kernels use at most 2"),
    case("bench --threads 1000", &[], &["bench", "--threads", "1000"], USAGE, "found \"1000\""),
    case("bench --valid-fraction 0", &[], &["bench", "--valid-fraction", "0"], USAGE,
        "expected a fraction greater than 0 and at most 1, found \"0\""),
    case("bench --valid-fraction 2", &[], &["bench", "--valid-fraction", "2"], USAGE,
        "expected a fraction greater than 0 and at most 1, found \"2\""),
    case("bench --valid-fraction NaN", &[], &["bench", "--valid-fraction", "NaN"], USAGE, "found \"NaN\""),
    case("bench --valid-fraction negative", &[], &["bench", "--valid-fraction=-0.5"], USAGE, "found \"-0.5\""),
    case("bench --hidden 0", &[], &["bench", "--hidden", "0"], USAGE, "at least 1, found 0"),
    case("bench --hidden beyond memory", &[], &["bench", "--hidden", "100000000"], REFUSED,
        "--hidden 100000000: the model's parameters: "),
    case("bench --hidden beyond a small budget", &[], &["bench", "--hidden", "128"], REFUSED,
        "--hidden 128: the model's parameters: 218144 parameters of 16 bytes need 3.3 MiB (3490304 bytes), more than the memory budget of 1 MiB")
        .env(&[("PADLESS_MEMORY_BUDGET", "1M")]),
    case("bench --steps 0", &[], &["bench", "--steps", "0"], USAGE, "at least 1, found 0"),
    case("demo --epochs 0", &[], &["demo", "--epochs", "0"], USAGE, "expected a number of epochs from 1"),
    case("demo --epochs beyond u32", &[], &["demo", "--epochs", "5000000000"], USAGE, "expected a number of epochs"),
    // Dictionaries and phoneme sets.
    case("an unknown phoneme", &[EVAL, &[File("x.dict", b"cat K AE1 T\ndog D XX1 G\n")]],
        &["g2p", "eval", "--data", "x.dict", "--model", "m.safetensors"], REFUSED,
        "parsing x.dict: line 2: expected phonemes of ARPAbet with stress digits (upper-case letters and a stress digit 0-2 on vowels), found `XX1` in the pronunciation of `dog`"),
    case("a lower-case phoneme", &[EVAL, &[File("x.dict", b"cat K ae1 T\n")]],
        &["g2p", "eval", "--data", "x.dict", "--model", "m.safetensors"], REFUSED,
        "line 1: expected phonemes of ARPAbet with stress digits (upper-case letters and a stress digit 0-2 on vowels), found `ae1` in the pronunciation of `cat`"),
    case("a stress digit 3", &[EVAL, &[File("x.dict", b"cat K AE3 T\n")]],
        &["g2p", "train", "--data", "x.dict"], REFUSED, "found `AE3` in the pronunciation of `cat`"),
    case("a consonant with stress", &[EVAL, &[File("x.dict", b"cat K1 AE1 T\n")]],
        &["g2p", "train", "--data", "x.dict"], REFUSED, "found `K1` in the pronunciation of `cat`"),
    case("a phoneme spelled <s>", &[EVAL, &[File("x.dict", b"cat K AE1 T\nzed Z <s> D\n")]],
        &["g2p", "eval", "--data", "x.dict", "--model", "m.safetensors"], REFUSED, "found `<s>` in the pronunciation of `zed`"),
    case("a word without phonemes", &[EVAL, &[File("x.dict", b"cat K AE1 T\ndog\n")]],
        &["g2p", "eval", "--data", "x.dict", "--model", "m.safetensors"], REFUSED, "line 2: expected phonemes after `dog`, found none"),
    case("a bad alternate marker", &[EVAL, &[File("x.dict", b"dog(x) D AO1 G\n")]],
        &["g2p", "eval", "--data", "x.dict", "--model", "m.safetensors"], REFUSED, "expected `word` or `word(N)` first, found `dog(x)`"),
    case("an alternate without its word", &[EVAL, &[File("x.dict", b"(2) D AO1 G\n")]],
        &["g2p", "eval", "--data", "x.dict", "--model", "m.safetensors"], REFUSED, "found `(2)`"),
    case("a dictionary of comments", &[EVAL, &[File("x.dict", b"# only a comment\n\n")]],
        &["g2p", "eval", "--data", "x.dict", "--model", "m.safetensors"], REFUSED,
        "splitting x.dict: the test split is empty: none of the dictionary's 0 words fell on it"),
    case("an empty dictionary", &[EVAL, &[File("x.dict", b"")]],
        &["g2p", "train", "--data", "x.dict"], REFUSED, "the train split is empty"),
    case("an empty test split", &[EVAL, &[File("x.dict", TRAIN_ONLY_DICT)]],
        &["g2p", "eval", "--data", "x.dict", "--model", "m.safetensors"], REFUSED,
        "splitting x.dict: the test split is empty: none of the dictionary's 3 words fell on it"),
    case("an empty validation split", &[EVAL, &[File("x.dict", TRAIN_ONLY_DICT)]],
        &["g2p", "eval", "--data", "x.dict", "--split", "validation", "--model", "m.safetensors"], REFUSED,
        "the validation split is empty"),
    case("g2p train on too few words", &[EVAL, &[File("x.dict", TRAIN_ONLY_DICT)]],
        &["g2p", "train", "--data", "x.dict"], REFUSED, "the validation split is empty"),
    case("a dictionary that is not UTF-8", &[EVAL, &[File("x.dict", b"cat K AE1 T\ncaf\xe9 K AE0 F EY1\n")]],
        &["g2p", "eval", "--data", "x.dict", "--model", "m.safetensors"], REFUSED,
        "reading the dictionary: x.dict:2: expected UTF-8 text, found the byte 0xe9"),
    case("a dictionary that is a folder", &[EVAL, &[Folder("x.dict")]],
        &["g2p", "eval", "--data", "x.dict", "--model", "m.safetensors"], REFUSED, "reading x.dict: expected a file, found a folder"),
    case("a missing dictionary", &[EVAL],
        &["g2p", "eval", "--data", "missing.dict", "--model", "m.safetensors"], REFUSED, "reading missing.dict"),
    case("a dictionary over the memory budget", &[EVAL],
        &["g2p", "eval", "--data", "dict.txt", "--model", "m.safetensors"], REFUSED, "more than the memory budget of 1 KiB")
        .env(&[("PADLESS_MEMORY_BUDGET", "1K")]),
    case("a missing phoneme set", &[EVAL],
        &["g2p", "eval", "--data", "dict.txt", "--phonemes", "none.txt", "--model", "m.safetensors"], REFUSED,
        "reading the phoneme set: reading none.txt"),
    case("an empty phoneme set", &[EVAL, &[File("set.txt", b"# nothing here\n")]],
        &["g2p", "eval", "--data", "dict.txt", "--phonemes", "set.txt", "--model", "m.safetensors"], REFUSED,
        "set.txt: expected phoneme symbols separated by whitespace, found none"),
    case("a phoneme set with a reserved symbol", &[EVAL, &[File("set.txt", b"K AE1\nT <pad>\n")]],
        &["g2p", "eval", "--data", "dict.txt", "--phonemes", "set.txt", "--model", "m.safetensors"], REFUSED,
        "parsing set.txt: line 2: expected phoneme symbols, found `<pad>`, which the phoneme vocabulary reserves"),
    case("a phoneme outside a custom set", &[EVAL, &[File("set.txt", b"k a t\n"), File("x.dict", b"cat k a t\ndog d o g\n")]],
        &["g2p", "eval", "--data", "x.dict", "--phonemes", "set.txt", "--model", "m.safetensors"], REFUSED,
        "line 2: expected phonemes of set.txt, found `d` in the pronunciation of `dog`"),
    // G2P flags.
    case("g2p train --epochs 0", &[DICT], &["g2p", "train", "--data", "dict.txt", "--epochs", "0"], USAGE,
        "expected a number of epochs from 1 to 4294967295, found \"0\""),
    case("g2p train --epochs at u64's largest", &[DICT],
        &["g2p", "train", "--data", "dict.txt", "--epochs", "18446744073709551615"], USAGE, "expected a number of epochs"),
    case("g2p train --hidden 0", &[DICT], &["g2p", "train", "--data", "dict.txt", "--hidden", "0"], USAGE,
        "at least 1, found 0"),
    case("g2p train --hidden beyond memory", &[DICT], &["g2p", "train", "--data", "dict.txt", "--hidden", "100000"], REFUSED,
        "--preset quick --hidden 100000: the model's parameters: "),
    case("g2p train --post-attention-layers beyond memory", &[DICT],
        &["g2p", "train", "--data", "dict.txt", "--post-attention-layers", "1000000"], REFUSED,
        "--preset quick --post-attention-layers 1000000: the model's parameters: "),
    case("g2p train --encoder-layers beyond memory", &[DICT],
        &["g2p", "train", "--data", "dict.txt", "--encoder-layers", "100000", "--hidden", "1024"], REFUSED,
        "--preset quick --hidden 1024 --encoder-layers 100000: the model's parameters: "),
    case("g2p train --minutes 0", &[DICT], &["g2p", "train", "--data", "dict.txt", "--minutes", "0"], USAGE,
        "expected a positive, finite number of minutes, found \"0\""),
    case("g2p train --minutes NaN", &[DICT], &["g2p", "train", "--data", "dict.txt", "--minutes", "NaN"], USAGE,
        "found \"NaN\""),
    case("g2p train --minutes inf", &[DICT], &["g2p", "train", "--data", "dict.txt", "--minutes", "inf"], USAGE,
        "found \"inf\""),
    case("g2p train --minutes negative", &[DICT], &["g2p", "train", "--data", "dict.txt", "--minutes=-1"], USAGE,
        "found \"-1\""),
    case("g2p train --patience 0", &[DICT], &["g2p", "train", "--data", "dict.txt", "--patience", "0"], USAGE,
        "at least 1, found 0"),
    case("g2p train --learning-rate negative", &[DICT], &["g2p", "train", "--data", "dict.txt", "--learning-rate=-1"], REFUSED,
        "--learning-rate must be a positive number, found -1"),
    case("g2p train --learning-rate inf", &[DICT], &["g2p", "train", "--data", "dict.txt", "--learning-rate", "inf"], REFUSED,
        "--learning-rate must be a positive number, found inf"),
    case("g2p train --label-smoothing 1", &[DICT], &["g2p", "train", "--data", "dict.txt", "--label-smoothing", "1"], REFUSED,
        "--label-smoothing must be in [0, 1), found 1"),
    case("g2p train --average-weights 1", &[DICT], &["g2p", "train", "--data", "dict.txt", "--average-weights", "1"], REFUSED,
        "--average-weights must be a decay in [0, 1), found 1"),
    case("g2p train --dropout NaN", &[DICT], &["g2p", "train", "--data", "dict.txt", "--dropout", "NaN"], REFUSED,
        "--dropout must be in [0, 1), found NaN"),
    case("g2p train --batch-size 0", &[DICT], &["g2p", "train", "--data", "dict.txt", "--batch-size", "0"], REFUSED,
        "--encoder-layers, --decoder-layers and --batch-size must be at least 1, found 1, 1 and 0"),
    case("g2p train --threads 3", &[DICT], &["g2p", "train", "--data", "dict.txt", "--threads", "3"], USAGE,
        "3 is not in 1..=2"),
    case("g2p train --limit 0", &[DICT], &["g2p", "train", "--data", "dict.txt", "--limit", "0"], USAGE,
        "at least 1, found 0"),
    case("g2p train --beam 0", &[DICT], &["g2p", "train", "--data", "dict.txt", "--beam", "0"], USAGE,
        "at least 1, found 0"),
    case("g2p eval --beam 0", &[EVAL], &["g2p", "eval", "--data", "dict.txt", "--model", "m.safetensors", "--beam", "0"], USAGE,
        "at least 1, found 0"),
    case("g2p eval --batch-size 0", &[EVAL], &["g2p", "eval", "--data", "dict.txt", "--model", "m.safetensors", "--batch-size", "0"], USAGE,
        "at least 1, found 0"),
    case("g2p pronounce --beam 0", &[EVAL], &["g2p", "pronounce", "--model", "m.safetensors", "--beam", "0", "cat"], USAGE,
        "at least 1, found 0"),
    case("g2p eval --beam beyond memory", &[MODEL, DICT],
        &["g2p", "eval", "--data", "dict.txt", "--model", "m.safetensors", "--beam", "1000000000"], REFUSED,
        "--beam 1000000000 --batch-size 512: "),
    case("g2p pronounce --beam beyond memory", &[MODEL],
        &["g2p", "pronounce", "--model", "m.safetensors", "--beam", "100000000000", "cat"], REFUSED,
        "--beam 100000000000 --batch-size 64: 100000000000 hypotheses of"),
    case("g2p eval of a file that is not a model", &[EVAL],
        &["g2p", "eval", "--data", "dict.txt", "--model", "m.safetensors"], REFUSED, "loading a model: weight file m.safetensors"),
    // Sizes from configs and file headers, checked against the memory budget before
    // anything of their size is allocated; `summary` counts from the config alone.
    case("summary of an LSTM of 1e9 units", &[&[File("big.json", br#"{"input": {"kind": "sequence", "features": 3}, "layers": [{"type": "lstm", "units": 1000000000}]}"#)]],
        &["summary", "big.json"], REFUSED,
        "model config: the parameters up to layer 0 (lstm): 4000000016000000000 parameters of 16 bytes need"),
    case("summary of an LSTM of u64's largest units", &[&[File("big.json", br#"{"input": {"kind": "sequence", "features": 3}, "layers": [{"type": "lstm", "units": 18446744073709551615}]}"#)]],
        &["summary", "big.json"], REFUSED,
        "the parameters up to layer 0 (lstm): 18446744073709551615 parameters of 16 bytes need"),
    case("summary of units beyond u64", &[&[File("big.json", br#"{"input": {"kind": "sequence", "features": 3}, "layers": [{"type": "lstm", "units": 18446744073709551616}]}"#)]],
        &["summary", "big.json"], REFUSED, "expected usize"),
    case("summary of negative units", &[&[File("big.json", br#"{"input": {"kind": "sequence", "features": 3}, "layers": [{"type": "gru", "units": -1}]}"#)]],
        &["summary", "big.json"], REFUSED, "expected usize"),
    case("summary of an embedding of 1e12 tokens", &[&[File("big.json", br#"{"input": {"kind": "tokens"}, "layers": [{"type": "embedding", "n_tokens": 1000000000000, "d_model": 8}]}"#)]],
        &["summary", "big.json"], REFUSED,
        "the parameters up to layer 0 (embedding): 8000000000000 parameters"),
    case("summary of a RepeatVector of 1e15 steps", &[&[File("big.json", br#"{"input": {"kind": "sequence", "features": 3}, "layers": [{"type": "lstm", "units": 4}, {"type": "repeat_vector", "n_steps": 1000000000000000}, {"type": "lstm", "units": 4, "return_sequences": true}]}"#)]],
        &["summary", "big.json"], REFUSED,
        "model config: one row's activations up to layer 1 (repeat_vector)"),
    case("summary of a sequence input of no features", &[&[File("zero.json", br#"{"input": {"kind": "sequence", "features": 0}, "layers": [{"type": "masking"}, {"type": "lstm", "units": 2}]}"#)]],
        &["summary", "zero.json"], REFUSED,
        "model input: expected sequences of at least 1 feature per step, found 0"),
    case("summary of a bidirectional GRU beyond the budget", &[&[File("big.json", br#"{"input": {"kind": "sequence", "features": 3}, "layers": [{"type": "bidirectional", "layer": {"type": "gru", "units": 100000}}]}"#)]],
        &["summary", "big.json"], REFUSED,
        "the parameters up to layer 0 (bidirectional): 60003000000 parameters"),
    case("train a config of 1e9 GRU units", &[TRAIN, &[File("big.json", br#"{"input": {"kind": "tokens"}, "layers": [{"type": "embedding", "d_model": 8, "mask_zero": true}, {"type": "gru", "units": 1000000000, "return_sequences": true}, {"type": "time_distributed_dense", "units": "vocab", "activation": "softmax"}]}"#)]],
        &["train", "--config", "big.json", "--data", "d.tsv", "--out", "run"], REFUSED,
        "model config: the parameters up to layer 1 (gru)"),
    // Hyperparameters, checked by the library whoever gives them.
    case("train at a learning rate of -1", &[TRAIN, &[File("lr.json", br#"{"input": {"kind": "tokens"}, "layers": [{"type": "embedding", "d_model": 8, "mask_zero": true}, {"type": "gru", "units": 8, "return_sequences": true}, {"type": "time_distributed_dense", "units": "vocab", "activation": "softmax"}], "training": {"learning_rate": -1}}"#)]],
        &["train", "--config", "lr.json", "--data", "d.tsv", "--out", "run"], REFUSED,
        "expected a finite learning rate greater than 0, found -1"),
    case("train at a learning rate of 0", &[TRAIN, &[File("lr.json", br#"{"input": {"kind": "tokens"}, "layers": [{"type": "embedding", "d_model": 8, "mask_zero": true}, {"type": "gru", "units": 8, "return_sequences": true}, {"type": "time_distributed_dense", "units": "vocab", "activation": "softmax"}], "training": {"learning_rate": 0}}"#)]],
        &["train", "--config", "lr.json", "--data", "d.tsv", "--out", "run"], REFUSED,
        "expected a finite learning rate greater than 0, found 0"),
    case("train with a clip norm of 0", &[TRAIN, &[File("clip.json", br#"{"input": {"kind": "tokens"}, "layers": [{"type": "embedding", "d_model": 8, "mask_zero": true}, {"type": "gru", "units": 8, "return_sequences": true}, {"type": "time_distributed_dense", "units": "vocab", "activation": "softmax"}], "training": {"clip_norm": 0}}"#)]],
        &["train", "--config", "clip.json", "--data", "d.tsv", "--out", "run"], REFUSED,
        "expected a finite clip norm greater than 0, found 0"),
    case("train with a negative clip norm", &[TRAIN, &[File("clip.json", br#"{"input": {"kind": "tokens"}, "layers": [{"type": "embedding", "d_model": 8, "mask_zero": true}, {"type": "gru", "units": 8, "return_sequences": true}, {"type": "time_distributed_dense", "units": "vocab", "activation": "softmax"}], "training": {"clip_norm": -1}}"#)]],
        &["train", "--config", "clip.json", "--data", "d.tsv", "--out", "run"], REFUSED,
        "expected a finite clip norm greater than 0, found -1"),
    case("train SGD with negative momentum", &[TRAIN, &[File("sgd.json", br#"{"input": {"kind": "tokens"}, "layers": [{"type": "embedding", "d_model": 8, "mask_zero": true}, {"type": "gru", "units": 8, "return_sequences": true}, {"type": "time_distributed_dense", "units": "vocab", "activation": "softmax"}], "training": {"optimizer": {"name": "sgd", "momentum": -0.5}}}"#)]],
        &["train", "--config", "sgd.json", "--data", "d.tsv", "--out", "run"], REFUSED,
        "SGD: expected momentum in [0, 1), found -0.5"),
    case("train Adam with a beta_1 of 1", &[TRAIN, &[File("adam.json", br#"{"input": {"kind": "tokens"}, "layers": [{"type": "embedding", "d_model": 8, "mask_zero": true}, {"type": "gru", "units": 8, "return_sequences": true}, {"type": "time_distributed_dense", "units": "vocab", "activation": "softmax"}], "training": {"optimizer": {"name": "adam", "beta_1": 1.0}}}"#)]],
        &["train", "--config", "adam.json", "--data", "d.tsv", "--out", "run"], REFUSED,
        "Adam: expected beta_1 in [0, 1), found 1"),
    case("train SGD at a learning rate of 1e30 diverges", &[TRAIN, &[File("sgd.json", br#"{"input": {"kind": "tokens"}, "layers": [{"type": "embedding", "d_model": 8, "mask_zero": true}, {"type": "gru", "units": 8, "return_sequences": true}, {"type": "time_distributed_dense", "units": "vocab"}], "training": {"optimizer": {"name": "sgd"}, "learning_rate": 1e30}}"#)]],
        &["train", "--config", "sgd.json", "--data", "d.tsv", "--out", "run", "--batch-size", "1", "--epochs", "5"], REFUSED,
        "diverged"),
    // Checkpoint headers: counts, rates, configs and format.
    case("resume from a header epoch of 1e300", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/last.safetensors", "trainer", "epoch", "1e300")]],
        &["train", "--resume", "run/last.safetensors", "--data", "d.tsv", "--out", "run"], REFUSED,
        "trainer: invalid type: floating point"),
    case("resume from a header epoch at u64's largest", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/last.safetensors", "trainer", "epoch", "18446744073709551615")]],
        &["train", "--resume", "run/last.safetensors", "--data", "d.tsv", "--out", "run"], REFUSED,
        "trainer: expected an epoch of at most 4294967295, found 18446744073709551615"),
    case("resume from a header step past u64", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/last.safetensors", "trainer", "step", "18446744073709551616")]],
        &["train", "--resume", "run/last.safetensors", "--data", "d.tsv", "--out", "run"], REFUSED,
        "trainer: invalid type: floating point"),
    case("resume from a header step at u64's largest", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/last.safetensors", "trainer", "step", "18446744073709551615")]],
        &["train", "--resume", "run/last.safetensors", "--data", "d.tsv", "--out", "run"], REFUSED,
        "trainer: expected a step of at most 9223372036854775807"),
    case("resume from a header lr_factor of inf", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/last.safetensors", "trainer", "lr_factor", "null")]],
        &["train", "--resume", "run/last.safetensors", "--data", "d.tsv", "--out", "run"], REFUSED,
        "trainer: invalid type: null, expected f64"),
    case("resume from a header lr_factor of 0", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/last.safetensors", "trainer", "lr_factor", "0")]],
        &["train", "--resume", "run/last.safetensors", "--data", "d.tsv", "--out", "run"], REFUSED,
        "trainer: expected a finite lr_factor greater than 0, found 0"),
    case("resume from a header learning rate of -1", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/last.safetensors", "trainer", "learning_rate", "-1")]],
        &["train", "--resume", "run/last.safetensors", "--data", "d.tsv", "--out", "run"], REFUSED,
        "trainer: expected a finite learning_rate of at least 0, found -1"),
    case("resume from a header without the run's state", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/last.safetensors", "trainer", "", REMOVE)]],
        &["train", "--resume", "run/last.safetensors", "--data", "d.tsv", "--out", "run"], REFUSED,
        "header has no trainer"),
    case("evaluate a checkpoint whose config has 1e9 units", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/best.safetensors", "model_config", "layers.1.units", "1000000000")]],
        &["evaluate", "--checkpoint", "run/best.safetensors", "--data", "d.tsv"], REFUSED,
        "model config: the parameters up to layer 1 (gru)"),
    case("evaluate a checkpoint whose config has 1e12 tokens", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/best.safetensors", "model_config", "layers.0.n_tokens", "1000000000000")]],
        &["evaluate", "--checkpoint", "run/best.safetensors", "--data", "d.tsv"], REFUSED,
        "model config: the parameters up to layer 0 (embedding)"),
    case("evaluate a checkpoint whose config has an unknown field", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/best.safetensors", "model_config", "layers.1.retrun_sequences", "true")]],
        &["evaluate", "--checkpoint", "run/best.safetensors", "--data", "d.tsv"], REFUSED,
        "unknown field \"retrun_sequences\" in layer 1 (gru); did you mean \"return_sequences\"?"),
    case("evaluate a checkpoint whose config lost its layers", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/best.safetensors", "model_config", "layers", REMOVE)]],
        &["evaluate", "--checkpoint", "run/best.safetensors", "--data", "d.tsv"], REFUSED,
        "missing field `layers`"),
    case("evaluate a checkpoint without a format", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/best.safetensors", "format", "", REMOVE)]],
        &["evaluate", "--checkpoint", "run/best.safetensors", "--data", "d.tsv"], REFUSED,
        "header has no format"),
    case("evaluate a checkpoint of another model kind", &[LETTER_RUN, &[File("d.tsv", LETTERS), Header("run/best.safetensors", "model_kind", "", "encoder_decoder")]],
        &["evaluate", "--checkpoint", "run/best.safetensors", "--data", "d.tsv"], REFUSED,
        "holds a encoder_decoder model, expected sequential"),
    case("resume a run trained with validation without it", &[&[Run("run", Run::Validated), File("d.tsv", LETTERS)]],
        &["train", "--resume", "run/last.safetensors", "--data", "d.tsv", "--out", "run"], REFUSED,
        "the resumed run's model_checkpoint watched val_loss, this fit's watches loss; expected the same monitor"),
    // Consistency: a checkpoint is read only beside the vocabularies it was trained with.
    case("evaluate a checkpoint of another run beside this run's vocab.json", &[LETTER_RUN, &[Run("other", Run::Words), Copy("other/best.safetensors", "run/best.safetensors"), File("d.tsv", LETTERS)]],
        &["evaluate", "--checkpoint", "run/best.safetensors", "--data", "d.tsv"], REFUSED,
        "run/best.safetensors: trained with other vocabularies (fingerprint fnv1a64:"),
    case("predict with a checkpoint of another run", &[LETTER_RUN, &[Run("other", Run::Words), Copy("other/best.safetensors", "run/best.safetensors")]],
        &["predict", "--checkpoint", "run/best.safetensors", "--input", "banana"], REFUSED,
        "expected the vocab.json of the run that wrote the checkpoint"),
    case("resume a checkpoint of another run", &[LETTER_RUN, &[Run("other", Run::Words), Copy("other/last.safetensors", "run/last.safetensors"), File("d.tsv", LETTERS)]],
        &["train", "--resume", "run/last.safetensors", "--data", "d.tsv", "--out", "run"], REFUSED,
        "trained with other vocabularies"),
    case("evaluate beside another run's vocab.json", &[LETTER_RUN, &[Run("other", Run::Words), Copy("other/vocab.json", "run/vocab.json"), File("d.tsv", LETTERS)]],
        &["evaluate", "--checkpoint", "run/best.safetensors", "--data", "d.tsv"], REFUSED,
        "trained with other vocabularies"),
    // G2P model headers: vocabularies that fit the network, sizes within the budget.
    case("g2p pronounce with an empty letter list", &[MODEL, &[Header("m.safetensors", "letters", "", "[]")]],
        &["g2p", "pronounce", "--model", "m.safetensors", "cat"], REFUSED,
        "letters: expected <pad> then at least one symbol, found 0 symbol(s)"),
    case("g2p pronounce with letters of another count", &[MODEL, &[Header("m.safetensors", "letters", "", r#"["<pad>", "c"]"#)]],
        &["g2p", "pronounce", "--model", "m.safetensors", "cat"], REFUSED,
        "letters: the network has 10 ids, found 2 symbols"),
    case("g2p pronounce with a letter twice", &[MODEL, &[Header("m.safetensors", "letters", "", r#"["<pad>", "a", "a"]"#)]],
        &["g2p", "pronounce", "--model", "m.safetensors", "cat"], REFUSED,
        "letters: expected each symbol once, found `a` twice"),
    case("g2p pronounce with phonemes without their reserved symbols", &[MODEL, &[Header("m.safetensors", "phonemes", "", r#"["K", "AE1", "T"]"#)]],
        &["g2p", "pronounce", "--model", "m.safetensors", "cat"], REFUSED,
        "phonemes: expected <pad>, <s>, </s> then at least one symbol, found 3 symbol(s)"),
    case("g2p pronounce with letters that are not a list", &[MODEL, &[Header("m.safetensors", "letters", "", "{")]],
        &["g2p", "pronounce", "--model", "m.safetensors", "cat"], REFUSED,
        "letters: invalid type: map, expected a sequence"),
    // 10^6 layers of this small model's 8 units are 5.4e8 parameters: over a 1 GiB budget.
    case("g2p pronounce with 1e6 post-attention layers", &[MODEL, &[Header("m.safetensors", "config", "post_attention_layers", "1000000")]],
        &["g2p", "pronounce", "--model", "m.safetensors", "cat"], REFUSED,
        "1000000 post-attention layers): the parameters").env(&[("PADLESS_MEMORY_BUDGET", "1G")]),
    case("g2p pronounce with a 1e12-unit encoder", &[MODEL, &[Header("m.safetensors", "config", "d_encoder", "1000000000000")]],
        &["g2p", "pronounce", "--model", "m.safetensors", "cat"], REFUSED,
        "d_encoder 1000000000000"),
    case("g2p pronounce with a header of 1e15 target tokens", &[MODEL, &[Header("m.safetensors", "config", "n_target_tokens", "1000000000000000")]],
        &["g2p", "pronounce", "--model", "m.safetensors", "cat"], REFUSED,
        "1000000000000000 target tokens"),
];

/// Counts the tests of this file that passed; the last one removes the shared folder.
fn finished() {
    static PASSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let tests = if cfg!(target_os = "linux") { 2 } else { 1 };
    if PASSED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == tests {
        std::fs::remove_dir_all(root()).unwrap();
    }
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_padless")
}

fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("padless-bad-inputs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// Trains `run` once (one epoch) and returns its folder.
fn trained(run: Run) -> PathBuf {
    static RUNS: OnceLock<std::sync::Mutex<BTreeMap<Run, PathBuf>>> = OnceLock::new();
    let runs = RUNS.get_or_init(Default::default);
    let mut runs = runs.lock().unwrap();
    if let Some(dir) = runs.get(&run) {
        return dir.clone();
    }
    let dir = root().join(format!("trained-{run:?}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (config, data, name, tokens) = match run {
        Run::Letters => (TAGGER, LETTERS, "d.tsv", "chars"),
        Run::Words => (TAGGER, WORDS, "d.tsv", "words"),
        Run::Vectors => (VECTOR_TAGGER, VECTORS, "d.jsonl", "chars"),
        Run::Validated => (TAGGER, LETTERS, "d.tsv", "chars"),
    };
    let validation: &[&str] = match run {
        Run::Validated => &["--validation-split", "0.5"],
        _ => &[],
    };
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
    let out = Command::new(binary())
        .current_dir(&dir)
        .args([
            "train",
            "--config",
            "config.json",
            "--data",
            name,
            "--tokens",
            tokens,
        ])
        .args(["--epochs", "1", "--out", "run"])
        .args(validation)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_dir = dir.join("run");
    runs.insert(run, run_dir.clone());
    run_dir
}

/// A small G2P model over the letters and phonemes of [`MODEL_DICT`], written once.
fn g2p_model() -> PathBuf {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            use padless_g2p::cmudict::{Malformed, parse};
            use padless_g2p::train::{TrainConfig, vocabularies};
            let text = String::from_utf8(MODEL_DICT.to_vec()).unwrap();
            let dict = parse(&text, Malformed::Error).unwrap();
            let (letters, phonemes) = vocabularies(&dict.entries);
            let mut train = TrainConfig::quick();
            train.network.d_embedding = 4;
            train.network.d_encoder = 4;
            let config = train.network(&letters, &phonemes);
            let model = padless_g2p::G2p {
                network: padless_g2p::Network::from(
                    config.init(&padless::default_device()).unwrap(),
                ),
                letters,
                phonemes,
                right_to_left: false,
            };
            let path = root().join("g2p-model.safetensors");
            model.save(&path, &[]).unwrap();
            path
        })
        .clone()
}

fn shipped_head() -> &'static str {
    static HEAD: OnceLock<String> = OnceLock::new();
    HEAD.get_or_init(|| {
        let text = std::fs::read_to_string(SHIPPED).unwrap();
        text.lines().take(200).map(|l| format!("{l}\n")).collect()
    })
}

fn make(dir: &Path, item: Item) {
    let at = |p: &str| {
        let path = dir.join(p);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        path
    };
    match item {
        File(name, bytes) => std::fs::write(at(name), bytes).unwrap(),
        Folder(name) => std::fs::create_dir_all(at(name)).unwrap(),
        Symlink(link, target) => {
            #[cfg(unix)]
            std::os::unix::fs::symlink(target, at(link)).unwrap();
            #[cfg(not(unix))]
            let _ = (link, target);
        }
        HardLink(link, target) => std::fs::hard_link(dir.join(target), at(link)).unwrap(),
        Run(name, run) => {
            let to = at(name);
            std::fs::create_dir_all(&to).unwrap();
            for entry in std::fs::read_dir(trained(run)).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
        G2pModel(name) => {
            std::fs::copy(g2p_model(), at(name)).unwrap();
        }
        Dictionary(name) => std::fs::write(at(name), shipped_head()).unwrap(),
        Remove(name) => std::fs::remove_file(dir.join(name)).unwrap(),
        Copy(from, to) => {
            std::fs::copy(dir.join(from), at(to)).unwrap();
        }
        Header(file, entry, path, value) => edit_header(&dir.join(file), entry, path, value),
    }
}

/// Edits `entry` of the safetensors header of `file` (see [`Header`]) and writes the file
/// back with the new header's length.
fn edit_header(file: &Path, entry: &str, path: &str, value: &str) {
    use serde_json::Value;
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let metadata = header["__metadata__"].as_object_mut().unwrap();
    if path.is_empty() {
        if value == REMOVE {
            metadata.remove(entry);
        } else {
            metadata.insert(entry.to_string(), Value::String(value.to_string()));
        }
    } else {
        let mut json: Value = serde_json::from_str(metadata[entry].as_str().unwrap()).unwrap();
        let (parents, last) = path.rsplit_once('.').unwrap_or(("", path));
        let mut at = &mut json;
        for key in parents.split('.').filter(|k| !k.is_empty()) {
            at = match key.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[key],
            };
        }
        let object = at.as_object_mut().unwrap();
        if value == REMOVE {
            object.remove(last);
        } else {
            object.insert(last.to_string(), serde_json::from_str(value).unwrap());
        }
        metadata.insert(entry.to_string(), Value::String(json.to_string()));
    }
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    std::fs::write(file, out).unwrap();
}

/// Every file under `dir` with its bytes (through links), and every name.
fn snapshot(dir: &Path) -> (BTreeMap<PathBuf, Vec<u8>>, Vec<String>) {
    let mut files = BTreeMap::new();
    let mut names = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            names.push(entry.file_name().to_string_lossy().into_owned());
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.insert(path, bytes);
            }
        }
    }
    (files, names)
}

/// Runs one case; the problems found, if any.
fn run_case(index: usize, case: &Case) -> Vec<String> {
    let dir = root().join(format!("case-{index:03}"));
    std::fs::create_dir_all(&dir).unwrap();
    for group in case.setup {
        for &item in *group {
            make(&dir, item);
        }
    }
    let (before, _) = snapshot(&dir);
    let mut command = Command::new(binary());
    command
        .current_dir(&dir)
        .args(case.args)
        .env_remove("PADLESS_MEMORY_BUDGET");
    for (key, value) in case.env {
        command.env(key, value);
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    match out.status.code() {
        Some(code) if code == case.code => {}
        Some(code) => problems.push(format!("exit code {code}, expected {}", case.code)),
        None => problems.push(format!("ended by a signal ({:?})", out.status)),
    }
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        problems.push("panicked".to_string());
    }
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("padless: ") || l.starts_with("error: "))
        .collect();
    if errors.len() != 1 {
        problems.push(format!("{} error lines, expected 1", errors.len()));
    }
    if !stderr.contains(case.error) {
        problems.push(format!("the error does not contain {:?}", case.error));
    }
    let (after, names) = snapshot(&dir);
    for (path, bytes) in &before {
        match after.get(path) {
            Some(now) if now == bytes => {}
            Some(_) => problems.push(format!("{} changed", path.display())),
            None => problems.push(format!("{} is gone", path.display())),
        }
    }
    if let Some(tmp) = names.iter().find(|n| n.contains(".tmp-")) {
        problems.push(format!("a temporary file is left: {tmp}"));
    }
    if !problems.is_empty() {
        problems.insert(
            0,
            format!(
                "case {index} ({}): padless {}",
                case.name,
                case.args.join(" ")
            ),
        );
        problems.push(format!("stderr: {stderr}"));
    }
    problems
}

#[test]
fn every_bad_input_fails_cleanly_with_its_error_and_changes_no_file() {
    assert!(CASES.len() >= 200, "{} cases", CASES.len());
    let mut names = std::collections::HashSet::new();
    for case in CASES {
        assert!(names.insert(case.name), "two cases named {:?}", case.name);
    }
    // Trained once, before the cases share them.
    trained(Run::Letters);
    trained(Run::Words);
    trained(Run::Vectors);
    trained(Run::Validated);
    g2p_model();
    // Two workers: the cases are independent processes in folders of their own.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|worker| {
                scope.spawn(move || {
                    CASES
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % 2 == worker)
                        .flat_map(|(i, case)| run_case(i, case))
                        .collect::<Vec<String>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    finished();
}

fn run_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "padless {}: {stderr}", args.join(" "));
    stderr
}

/// What the bad inputs above must not break: a byte-order mark is skipped, a custom phoneme
/// set is read, outputs replace files whole, and temporary files that a killed run left
/// beside an output are removed by the next write.
#[cfg(target_os = "linux")]
#[test]
fn byte_order_marks_are_skipped_and_stale_temporary_files_removed() {
    let dir = root().join("guarantees");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tagger.json"), TAGGER).unwrap();
    let data = [&b"\xef\xbb\xbf"[..], LETTERS].concat();
    std::fs::write(dir.join("d.tsv"), &data).unwrap();
    run_in(
        &dir,
        &[
            "train",
            "--config",
            "tagger.json",
            "--data",
            "d.tsv",
            "--epochs",
            "1",
            "--out",
            "run",
        ],
    );
    let vocab = std::fs::read_to_string(dir.join("run/vocab.json")).unwrap();
    let vocab: serde_json::Value = serde_json::from_str(&vocab).unwrap();
    let symbols: Vec<&str> = vocab["input"]["vocab"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // The letters of the six words, after the reserved symbols; no byte-order mark.
    assert_eq!(
        symbols,
        [
            "<pad>", "</s>", "<unk>", "b", "a", "n", "k", "i", "w", "p", "l", "e", "f", "g", "r",
            "m", "o"
        ]
    );
    // A run killed while writing left these; resuming in place writes every file again.
    let stale = [
        format!(".vocab.json.tmp-{DEAD_PID}-0"),
        format!(".last.safetensors.tmp-{DEAD_PID}"),
        format!(".training.json.tmp-{DEAD_PID}-1"),
    ];
    for name in &stale {
        std::fs::write(dir.join("run").join(name), b"partial").unwrap();
    }
    run_in(
        &dir,
        &[
            "train",
            "--resume",
            "run/last.safetensors",
            "--data",
            "d.tsv",
            "--epochs",
            "1",
            "--out",
            "run",
        ],
    );
    let (_, names) = snapshot(&dir.join("run"));
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    assert_eq!(std::fs::read(dir.join("d.tsv")).unwrap(), data);

    // A dictionary and a phoneme set with byte-order marks, and a stale temporary file
    // beside the errors file.
    std::fs::copy(g2p_model(), dir.join("m.safetensors")).unwrap();
    std::fs::write(dir.join("x.dict"), "\u{feff}cat K AE1 T\nyak Y AE1 K\n").unwrap();
    std::fs::write(dir.join("set.txt"), "\u{feff}K AE1 T\nD AO1 G AW1 Y\n").unwrap();
    std::fs::write(dir.join("errors.tsv"), "old\n").unwrap();
    let stale = dir.join(format!(".errors.tsv.tmp-{DEAD_PID}-2"));
    std::fs::write(&stale, b"partial").unwrap();
    let args = [
        "g2p",
        "eval",
        "--data",
        "x.dict",
        "--phonemes",
        "set.txt",
        "--model",
        "m.safetensors",
        "--errors",
        "errors.tsv",
    ];
    let out = Command::new(binary())
        .current_dir(&dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Test split: 1 words"), "{stdout}");
    let errors = std::fs::read_to_string(dir.join("errors.tsv")).unwrap();
    assert!(
        errors.starts_with("word\toutput\treferences\twrong\n"),
        "{errors}"
    );
    assert!(!stale.exists());
    finished();
}
