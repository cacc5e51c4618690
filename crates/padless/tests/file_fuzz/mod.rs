//! Mutations of model files and checkpoints for the fuzz tests (shared by this crate's
//! `fuzz_files.rs` and `padless-g2p`'s `fuzz.rs`): byte flips, cuts, deletions and copies
//! anywhere in the file, and edits of the safetensors header's JSON, including the JSON held
//! in its metadata strings (a model's config, a trainer's state, vocabularies): a number
//! replaced by a huge, negative, fractional or non-numeric value, or a key removed. The
//! header is written back with its length, so the edit reaches the reader's parsing of it.

// Two test crates include this file and each uses a part of it.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;

/// What a header number becomes.
pub const REPLACEMENTS: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "7",
    "0.5",
    "1e9",
    "1e300",
    "-1e300",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "null",
    "true",
    "\"NaN\"",
    "\"inf\"",
    "[]",
    "{}",
    "[1000000000, 1000000000]",
];

/// One change to a file.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// XOR a byte.
    Flip(Index, u8),
    /// Cut the file there.
    Truncate(Index),
    /// Remove up to this many bytes there.
    Delete(Index, usize),
    /// Copy up to this many bytes there after themselves.
    Duplicate(Index, usize),
    /// Replace a number of the header by one of [`REPLACEMENTS`].
    Number(Index, Index),
    /// Replace a number of the JSON held in a header string (a model's config, a trainer's
    /// state) by one of [`REPLACEMENTS`]: where the sizes and counts are.
    NestedNumber(Index, Index),
    /// Remove a key of the header.
    RemoveKey(Index),
    /// Remove an item of an array of the header or of the JSON in its strings (a symbol of
    /// a vocabulary, a dimension of a shape, a layer).
    RemoveItem(Index),
}

/// A random mutation: header edits three times as likely as byte edits, since most byte
/// edits stop at the format's first check.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), 1..64usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), 1..64usize).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(i, r)| Mutation::Number(i, r)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(i, r)| Mutation::NestedNumber(i, r)),
        3 => any::<Index>().prop_map(Mutation::RemoveKey),
        3 => any::<Index>().prop_map(Mutation::RemoveItem),
    ]
}

/// Where the JSON that header edits change is.
#[derive(Debug, Clone, Copy)]
pub enum Container {
    /// A safetensors file's header.
    Safetensors,
    /// The whole file is JSON (a config).
    Json,
}

/// Mutated files: one of `corpus` with up to `most` mutations, or random bytes, 8 : 1.
pub fn inputs(
    corpus: Vec<Vec<u8>>,
    most: usize,
    container: Container,
) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        prop::sample::select(corpus),
        prop::collection::vec(mutation(), 1..most),
    )
        .prop_map(move |(file, ms)| ms.iter().fold(file, |bytes, m| apply(bytes, m, container)));
    let random = prop::collection::vec(any::<u8>(), 0..256);
    prop_oneof![8 => mutated, 1 => random]
}

/// A runner of `cases` cases from a fixed seed.
pub fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// The header of a safetensors file and where its data starts, if it has one.
fn header(bytes: &[u8]) -> Option<(Value, usize)> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let end = n.checked_add(8)?;
    let value = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    Some((value, end))
}

/// The file with `header` in place of its own, padded to 8 bytes as safetensors writes it.
fn with_header(header: &Value, rest: &[u8]) -> Vec<u8> {
    let mut text = serde_json::to_vec(header).expect("a JSON value serialises");
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend_from_slice(rest);
    out
}

/// What [`visit`] does at the slot it is looking for.
enum Edit<'a> {
    /// Count the slots only.
    Count,
    /// Count the numbers inside JSON held in strings only.
    CountNested,
    /// Replace the number there.
    Number(&'a str),
    /// Replace the number there, counting numbers inside JSON held in strings only.
    NestedNumber(&'a str),
    /// Remove the key there.
    RemoveKey,
    /// Count array items only.
    CountItems,
    /// Remove the array item there, counting array items only.
    RemoveItem,
}

/// Walks `value`: numbers and object keys are slots, numbered in order from `*seen`; JSON
/// held in strings (a metadata entry) is walked too and written back. Applies `edit` at
/// slot `target` (numbers to `Edit::Number`, keys to `Edit::RemoveKey`).
fn visit(value: &mut Value, seen: &mut usize, target: usize, edit: &Edit) {
    visit_in(value, seen, target, edit, false);
}

/// [`visit`], told whether `value` is inside JSON held in a string.
fn visit_in(value: &mut Value, seen: &mut usize, target: usize, edit: &Edit, nested: bool) {
    let only_nested = matches!(edit, Edit::CountNested | Edit::NestedNumber(_));
    let items = matches!(edit, Edit::CountItems | Edit::RemoveItem);
    match value {
        Value::Number(_) if (only_nested && !nested) || items => {}
        Value::Number(_) => {
            if let (Edit::Number(to) | Edit::NestedNumber(to), true) = (edit, *seen == target) {
                *value = serde_json::from_str(to).expect("replacements are JSON");
            }
            *seen += 1;
        }
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if !only_nested && !items {
                    if let (Edit::RemoveKey, true) = (edit, *seen == target) {
                        map.remove(&key);
                        *seen += 1;
                        continue;
                    }
                    *seen += 1;
                }
                if let Some(inner) = map.get_mut(&key) {
                    visit_in(inner, seen, target, edit, nested);
                }
            }
        }
        Value::Array(list) => {
            if let Edit::RemoveItem = edit
                && (*seen..*seen + list.len()).contains(&target)
            {
                list.remove(target - *seen);
            }
            if items {
                *seen += list.len();
            }
            list.iter_mut()
                .for_each(|item| visit_in(item, seen, target, edit, nested));
        }
        Value::String(text) => {
            if let Ok(mut inner @ (Value::Object(_) | Value::Array(_))) =
                serde_json::from_str::<Value>(text)
            {
                visit_in(&mut inner, seen, target, edit, true);
                *text = inner.to_string();
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// The file with `edit` applied at slot `slot` of its JSON (see [`visit`]); unchanged when
/// its JSON does not parse or has no slot.
fn edit_header(bytes: Vec<u8>, slot: &Index, edit: &Edit, container: Container) -> Vec<u8> {
    let parsed = match container {
        Container::Safetensors => header(&bytes),
        Container::Json => serde_json::from_slice(&bytes)
            .ok()
            .map(|v| (v, bytes.len())),
    };
    let Some((mut value, end)) = parsed else {
        return bytes;
    };
    let mut slots = 0;
    let count = match edit {
        Edit::NestedNumber(_) => Edit::CountNested,
        Edit::RemoveItem => Edit::CountItems,
        _ => Edit::Count,
    };
    visit(&mut value, &mut slots, usize::MAX, &count);
    if slots == 0 {
        return bytes;
    }
    visit(&mut value, &mut 0, slot.index(slots), edit);
    match container {
        Container::Safetensors => with_header(&value, &bytes[end..]),
        Container::Json => serde_json::to_vec_pretty(&value).expect("a JSON value serialises"),
    }
}

/// Applies one mutation; a header edit on a file whose header no longer parses changes
/// nothing.
pub fn apply(mut bytes: Vec<u8>, mutation: &Mutation, container: Container) -> Vec<u8> {
    let at = |i: &Index, len: usize| i.index(len + 1);
    match mutation {
        Mutation::Flip(i, b) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            bytes[at] ^= b | 1;
        }
        Mutation::Flip(..) => {}
        Mutation::Truncate(i) => bytes.truncate(at(i, bytes.len())),
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
        Mutation::Number(slot, to) => {
            let to = REPLACEMENTS[to.index(REPLACEMENTS.len())];
            return edit_header(bytes, slot, &Edit::Number(to), container);
        }
        Mutation::NestedNumber(slot, to) => {
            let to = REPLACEMENTS[to.index(REPLACEMENTS.len())];
            return edit_header(bytes, slot, &Edit::NestedNumber(to), container);
        }
        Mutation::RemoveItem(slot) => {
            return edit_header(bytes, slot, &Edit::RemoveItem, container);
        }
        Mutation::RemoveKey(slot) => {
            return edit_header(bytes, slot, &Edit::RemoveKey, container);
        }
    }
    bytes
}
