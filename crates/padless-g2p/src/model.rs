//! [`G2p`]: a [`Network`] (an LSTM [`EncoderDecoder`] or a [`Transformer`]) with its letter
//! and phoneme vocabularies, saved as one safetensors file.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Device, Int, Tensor};
use padless::AnyModel;
use padless::Padding;
use padless::model::checkpoint_metadata;
use padless::seq2seq::{EncoderDecoder, beam_decode_ensemble, greedy_decode_ensemble};
use padless::sequence::{Truncating, pad_sequences};
use padless::tensor_util::int_tensor_from;
use padless::transformer::Transformer;
use padless::weights::NamedWeight;
use padless::weights::{StoredFloat, load_safetensors, save_safetensors_as};

use crate::error::{G2pError, Result};
use crate::network::{LSTM, Network, TRANSFORMER};
use crate::rescore::rescore_both_directions;
use crate::train::Trainable;
use crate::vocab::{SOURCE_SPECIALS, TARGET_SPECIALS, Vocab};

/// The file format tag in a saved model's header.
pub const MODEL_FORMAT: &str = "padless-g2p-1";

/// The header value of a model that writes pronunciations in reading order.
const LEFT_TO_RIGHT: &str = "left-to-right";
/// The header value of a model that writes pronunciations last phoneme first.
const RIGHT_TO_LEFT: &str = "right-to-left";

/// The longest pronunciation the decoder produces for a word of `n` letters.
pub fn max_phonemes(n_letters: usize) -> usize {
    2 * n_letters + 5
}

/// `left-to-right` or `right-to-left`: a direction as model files name it.
pub fn direction_name(right_to_left: bool) -> &'static str {
    if right_to_left {
        RIGHT_TO_LEFT
    } else {
        LEFT_TO_RIGHT
    }
}

/// A grapheme-to-phoneme model.
#[derive(Debug, Clone)]
pub struct G2p {
    /// The network.
    pub network: Network,
    /// Characters (`<pad>` first).
    pub letters: Vocab,
    /// Phonemes (`<pad>`, `<s>`, `</s>` first).
    pub phonemes: Vocab,
    /// Whether the network writes a pronunciation last phoneme first (trained with
    /// [`crate::train::TrainConfig::right_to_left`]); [`G2p::pronounce`] returns reading order
    /// either way.
    pub right_to_left: bool,
}

impl G2p {
    /// Letter ids of `words`, post-padded with 0: `[batch, longest]`.
    ///
    /// # Errors
    /// [`G2pError::UnknownCharacters`] for a character outside the alphabet, or an empty word.
    pub fn encode_words(&self, words: &[String], device: &Device) -> Result<Tensor<2, Int>> {
        let ids: Vec<Vec<i64>> = words
            .iter()
            .map(|w| letter_ids(&self.letters, w))
            .collect::<Result<_>>()?;
        Ok(pad_rows(&ids, device))
    }

    /// Pronounces `words` (lower-cased), `batch_size` words at a time; `beam` 1 is greedy.
    ///
    /// # Errors
    /// Unknown characters or an empty word.
    pub fn pronounce(
        &self,
        words: &[String],
        beam: usize,
        batch_size: usize,
        device: &Device,
    ) -> Result<Vec<Vec<String>>> {
        pronounce_ensemble(std::slice::from_ref(self), words, beam, batch_size, device)
    }

    /// `left-to-right` or `right-to-left`, as saved in the header.
    pub fn direction(&self) -> &'static str {
        direction_name(self.right_to_left)
    }

    /// Writes the model atomically: weights, config and vocabularies, with `extra` header
    /// entries (training figures).
    ///
    /// # Errors
    /// Weights that are not finite (a diverged run), or a file that cannot be written.
    pub fn save(&self, path: &Path, extra: &[(&str, String)]) -> Result<()> {
        self.save_as(path, extra, StoredFloat::F32)
    }

    /// [`G2p::save`] with the weights stored as `format`: [`StoredFloat::F16`] halves the
    /// file, and [`G2p::load`] widens the weights back to f32.
    ///
    /// # Errors
    /// As [`G2p::save`], and a weight that `format` cannot hold.
    pub fn save_as(
        &self,
        path: &Path,
        extra: &[(&str, String)],
        format: StoredFloat,
    ) -> Result<()> {
        let json = |v: serde_json::Result<String>| v.expect("plain data serialises");
        let mut metadata = HashMap::from([
            ("format".to_string(), MODEL_FORMAT.to_string()),
            ("family".to_string(), self.network.family().to_string()),
            ("config".to_string(), self.network.config_json()),
            (
                "letters".to_string(),
                json(serde_json::to_string(&self.letters.symbols)),
            ),
            (
                "phonemes".to_string(),
                json(serde_json::to_string(&self.phonemes.symbols)),
            ),
            ("direction".to_string(), self.direction().to_string()),
        ]);
        metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let weights = self.network.weights();
        // A diverged network is never written: it would replace a good model.
        for weight in &weights {
            if let Some((index, &value)) = weight
                .values
                .iter()
                .enumerate()
                .find(|(_, v)| !v.is_finite())
            {
                return Err(padless::Error::NonFiniteWeights {
                    path: path.to_path_buf(),
                    name: weight.name.clone(),
                    value,
                    index,
                }
                .into());
            }
        }
        save_safetensors_as(path, &weights, &metadata, format)?;
        Ok(())
    }

    /// Reads a model written by [`G2p::save`], or the last checkpoint of a `g2p train` run
    /// (padless's checkpoint format with the vocabularies and direction in its header), with
    /// its header.
    ///
    /// # Errors
    /// A missing or foreign file, or weights that do not fit the config.
    pub fn load(path: &Path, device: &Device) -> Result<(G2p, HashMap<String, String>)> {
        let bad = |reason: String| G2pError::BadModel {
            path: path.to_path_buf(),
            reason,
        };
        if let Ok(metadata) = checkpoint_metadata(path) {
            let network = match padless::load::<AnyModel>(path, device)? {
                AnyModel::EncoderDecoder(n) => Network::Lstm(n),
                AnyModel::Transformer(n) => Network::Transformer(n),
                other => {
                    return Err(bad(format!(
                        "a checkpoint of a {} model, expected an encoder_decoder or a transformer",
                        other.kind()
                    )));
                }
            };
            return G2p::from_header(path, network, metadata);
        }
        let (weights, metadata) = load_safetensors(path)?;
        let get = |key: &str| {
            metadata
                .get(key)
                .ok_or_else(|| bad(format!("not a G2P model: its header has no `{key}`")))
        };
        let format = get("format")?;
        if format != MODEL_FORMAT {
            return Err(bad(format!("format `{format}`, expected `{MODEL_FORMAT}`")));
        }
        let config = get("config")?;
        // Models saved before the Transformer family existed name no family: LSTM.
        let network = match metadata.get("family").map(String::as_str) {
            None | Some(LSTM) => network_from::<EncoderDecoder>(config, &weights, device, bad)?,
            Some(TRANSFORMER) => network_from::<Transformer>(config, &weights, device, bad)?,
            Some(other) => {
                return Err(bad(format!(
                    "family `{other}`, expected `{LSTM}` or `{TRANSFORMER}`"
                )));
            }
        };
        G2p::from_header(path, network, metadata)
    }

    /// The model of `network` with the vocabularies and direction of a file's header.
    fn from_header(
        path: &Path,
        network: Network,
        metadata: HashMap<String, String>,
    ) -> Result<(G2p, HashMap<String, String>)> {
        let bad = |reason: String| G2pError::BadModel {
            path: path.to_path_buf(),
            reason,
        };
        // Each list starts with its reserved symbols, holds no symbol twice and has one
        // symbol per id of the network's embedding (and, for phonemes, of its output layer):
        // a list that disagrees would decode ids into the wrong symbols, or index past it.
        let symbols = |key: &str, specials: &[&str], ids: usize| -> Result<Vocab> {
            let json = metadata
                .get(key)
                .ok_or_else(|| bad(format!("not a G2P model: its header has no `{key}`")))?;
            let list: Vec<String> =
                serde_json::from_str(json).map_err(|e| bad(format!("{key}: {e}")))?;
            let reserved_first = list.iter().zip(specials).all(|(found, s)| found == s);
            if !reserved_first || list.len() <= specials.len() {
                return Err(bad(format!(
                    "{key}: expected {} then at least one symbol, found {} symbol(s): {}",
                    specials.join(", "),
                    list.len(),
                    list.iter().take(8).cloned().collect::<Vec<_>>().join(" ")
                )));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = list.iter().find(|s| !seen.insert(s.as_str())) {
                return Err(bad(format!(
                    "{key}: expected each symbol once, found `{twice}` twice"
                )));
            }
            if list.len() != ids {
                return Err(bad(format!(
                    "{key}: the network has {ids} ids, found {} symbols",
                    list.len()
                )));
            }
            Ok(Vocab::from_symbols(list))
        };
        use padless::seq2seq::StepDecoder;
        let letters = symbols("letters", &SOURCE_SPECIALS, network.n_source_tokens())?;
        let phonemes = symbols("phonemes", &TARGET_SPECIALS, network.n_target_tokens())?;
        // Models saved before the option existed have no `direction`: left to right.
        let right_to_left = match metadata.get("direction").map(String::as_str) {
            None | Some(LEFT_TO_RIGHT) => false,
            Some(RIGHT_TO_LEFT) => true,
            Some(other) => {
                return Err(bad(format!(
                    "direction `{other}`, expected `{LEFT_TO_RIGHT}` or `{RIGHT_TO_LEFT}`"
                )));
            }
        };
        let model = G2p {
            network,
            letters,
            phonemes,
            right_to_left,
        };
        Ok((model, metadata))
    }
}

/// The network of family `N` that the JSON `config` describes, holding `weights`; `bad` makes
/// the file's error from a reason.
fn network_from<N: Trainable>(
    config: &str,
    weights: &[NamedWeight],
    device: &Device,
    bad: impl Fn(String) -> G2pError,
) -> Result<Network> {
    let config: N::Config =
        serde_json::from_str(config).map_err(|e| bad(format!("config: {e}")))?;
    let mut network = N::build(&config, device)?;
    network
        .set_weights(weights)
        .map_err(|e| bad(e.to_string()))?;
    Ok(network.into())
}

/// Pronounces `words` (lower-cased) with `models` decoded together (their next-phoneme
/// probabilities averaged at every step: [`greedy_decode_ensemble`], [`beam_decode_ensemble`]),
/// `batch_size` words at a time; `beam` 1 is greedy. One model pronounces as
/// [`G2p::pronounce`]. Right-to-left models decode the same way and their output is turned
/// to reading order; models of both directions together rescore each other's candidates
/// ([`rescore_both_directions`], `beam` candidates per direction).
///
/// # Errors
/// No models, models whose letters or phonemes differ, unknown characters or an empty word.
pub fn pronounce_ensemble(
    models: &[G2p],
    words: &[String],
    beam: usize,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Vec<String>>> {
    let first = check_vocabularies(models)?;
    let both_directions = models
        .iter()
        .any(|m| m.right_to_left != first.right_to_left);
    let networks: Vec<&Network> = models.iter().map(|m| &m.network).collect();
    // Sorting by length keeps padding (wasted work) low; the results go back in order.
    // Longest first: the first batch needs the most memory and later ones reuse it (shortest
    // first touched fresh pages batch after batch as the buffers grew).
    let mut order: Vec<usize> = (0..words.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(words[i].chars().count()));
    let mut results = vec![Vec::new(); words.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let batch: Vec<String> = chunk.iter().map(|&i| words[i].to_lowercase()).collect();
        let source = first.encode_words(&batch, device)?;
        let longest = batch.iter().map(|w| w.chars().count()).max().unwrap_or(1);
        let mut decoded = if both_directions {
            rescore_both_directions(models, source, beam, max_phonemes(longest))?
        } else if beam <= 1 {
            greedy_decode_ensemble(&networks, source, max_phonemes(longest))?
        } else {
            beam_decode_ensemble(&networks, source, beam, max_phonemes(longest))?
        };
        if first.right_to_left && !both_directions {
            decoded.iter_mut().for_each(|ids| ids.reverse());
        }
        for (&i, ids) in chunk.iter().zip(decoded) {
            results[i] = ids
                .iter()
                .filter_map(|&id| first.phonemes.symbol(id).map(str::to_string))
                .collect();
        }
    }
    Ok(results)
}

/// The first of `models`, once every model is known to read the same letters and write the
/// same phonemes (ids and symbols), as an ensemble needs.
fn check_vocabularies(models: &[G2p]) -> Result<&G2p> {
    let first = models.first().ok_or_else(|| {
        G2pError::Config("an ensemble needs at least one model, found none".to_string())
    })?;
    for (i, model) in models.iter().enumerate().skip(1) {
        for (what, mine, theirs) in [
            ("letters", &model.letters, &first.letters),
            ("phonemes", &model.phonemes, &first.phonemes),
        ] {
            if mine.symbols != theirs.symbols {
                return Err(G2pError::Config(format!(
                    "models decoded together must share their {what}: model 1 has {} ({}), model {} has {} ({})",
                    theirs.len(),
                    theirs.symbols.join(" "),
                    i + 1,
                    mine.len(),
                    mine.symbols.join(" ")
                )));
            }
        }
    }
    Ok(first)
}

/// Letter ids of one word (lower-cased).
///
/// # Errors
/// [`G2pError::UnknownCharacters`] naming every unknown character, or an empty word.
pub fn letter_ids(letters: &Vocab, word: &str) -> Result<Vec<i64>> {
    let word = word.to_lowercase();
    let mut unknown: Vec<String> = Vec::new();
    let ids: Vec<i64> = word
        .chars()
        .filter_map(|c| {
            let id = letters.id(&c.to_string());
            if id.is_none() && !unknown.contains(&format!("`{c}`")) {
                unknown.push(format!("`{c}`"));
            }
            id
        })
        .collect();
    if !unknown.is_empty() || ids.is_empty() {
        return Err(G2pError::UnknownCharacters {
            word: word.clone(),
            found: if ids.is_empty() && unknown.is_empty() {
                "an empty word is".to_string()
            } else {
                format!(
                    "{} {}",
                    unknown.join(", "),
                    if unknown.len() == 1 { "is" } else { "are" }
                )
            },
            alphabet: letters.symbols[1..].concat(),
        });
    }
    Ok(ids)
}

/// Rows post-padded with 0 to the longest (at least 1 step): `[rows, longest]`.
pub fn pad_rows(rows: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
    let longest = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let padded = pad_sequences(rows, Some(longest), 0, Padding::Post, Truncating::Post);
    int_tensor_from(&padded.values, [padded.batch, padded.time], device)
}
