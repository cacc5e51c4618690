//! Model files: one safetensors file per model, the same format for every model and for the
//! trainer's checkpoints ([`CHECKPOINT_FORMAT`]).
//!
//! The header holds the format, the model's kind ([`Model::KIND`]) and its config as JSON;
//! the tensors hold the weights under their names (f32). A trainer's checkpoint adds its own
//! header entries and tensors (optimizer state, averaged weights, callback states: see
//! `train/checkpoint.rs`), whose names start with `__` so that no model weight can take them.
//! Files are written to a temporary file and renamed, so an interrupted save leaves the
//! previous file intact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use safetensors::SafeTensors;

use super::Model;
use crate::error::{Error, Result};
use crate::seq2seq::EncoderDecoder;
use crate::sequential::Sequential;
use crate::transformer::Transformer;
use crate::weights::{
    NamedWeight, RawTensor, parse_tensors, serialize_safetensors, write_atomically,
};

/// The format this version writes and reads, for models and trainer checkpoints alike.
pub const CHECKPOINT_FORMAT: &str = "padless-checkpoint-2";
const FORMAT: &str = "format";
const VERSION: &str = "padless_version";
const KIND: &str = "model_kind";
const CONFIG: &str = "model_config";
/// The header keys this module writes, which callers' extra entries may not replace.
const RESERVED: [&str; 4] = [FORMAT, VERSION, KIND, CONFIG];
/// Tensor names of this prefix are not model weights.
const INTERNAL: &str = "__";
/// The byte tensor of a checkpoint: the optimizer's state.
pub(crate) const OPTIMIZER: &str = "__optimizer__";

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::WeightFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A model file as read: its header entries, the model's weights, and the other tensors.
pub(crate) struct SavedFile {
    pub(crate) path: PathBuf,
    pub(crate) metadata: HashMap<String, String>,
    /// The model's weights (names not starting with `__`).
    pub(crate) weights: Vec<NamedWeight>,
    /// Other f32 tensors (averaged weights, callback states), with their full names.
    pub(crate) internal: Vec<NamedWeight>,
    /// The byte tensors (the optimizer's state).
    pub(crate) raw: Vec<RawTensor>,
}

impl SavedFile {
    /// The header entry `key`.
    ///
    /// # Errors
    /// [`Error::WeightFile`] when the header has none.
    pub(crate) fn get(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| bad(&self.path, format!("header has no {key}")))
    }

    /// An error about this file.
    pub(crate) fn error(&self, message: impl Into<String>) -> Error {
        bad(&self.path, message)
    }

    /// The saved model's config (JSON).
    ///
    /// # Errors
    /// When the header has none.
    pub(crate) fn config(&self) -> Result<&str> {
        self.get(CONFIG)
    }

    /// The saved model's kind.
    ///
    /// # Errors
    /// When the header has none.
    pub(crate) fn kind(&self) -> Result<&str> {
        self.get(KIND)
    }

    /// Rebuilds the saved model as `L` on `device`.
    ///
    /// # Errors
    /// A kind `L` cannot hold, a config that does not parse or build, or weights that do not
    /// fit it, naming the file.
    pub(crate) fn model<L: Loadable>(&self, device: &Device) -> Result<L> {
        L::from_saved(self.kind()?, self.config()?, &self.weights, device)
            .map_err(|e| self.error(e.to_string()))
    }
}

/// Reads a model file or checkpoint (with its optimizer state as bytes, if any).
///
/// # Errors
/// A missing, truncated or foreign file, or another format version, each said exactly.
pub(crate) fn read_saved(path: &Path) -> Result<SavedFile> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let metadata = read_header(path, &bytes)?;
    let (all, raw) = parse_tensors(path, &bytes, &[OPTIMIZER])?;
    let (internal, weights) = all.into_iter().partition(|w| w.name.starts_with(INTERNAL));
    Ok(SavedFile {
        path: path.to_path_buf(),
        metadata,
        weights,
        internal,
        raw,
    })
}

/// The header entries of a file in [`CHECKPOINT_FORMAT`], after checking the format.
fn read_header(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
        bad(
            path,
            format!("not a readable checkpoint: truncated, corrupt or not a padless file ({e})"),
        )
    })?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let format = metadata
        .get(FORMAT)
        .ok_or_else(|| bad(path, format!("header has no {FORMAT}")))?;
    if format != CHECKPOINT_FORMAT {
        return Err(bad(
            path,
            format!("format {format}, expected {CHECKPOINT_FORMAT}"),
        ));
    }
    Ok(metadata)
}

/// Writes `model` (kind, config and weights) with the `internal` tensors (names starting with
/// `__`), the `raw` byte tensors and the `extra` header entries to `path`, atomically.
///
/// # Errors
/// A model whose config cannot be written, an extra entry that would replace one of the
/// format's own, or a file that cannot be written.
pub(crate) fn write_saved<M: Model>(
    path: &Path,
    model: &M,
    config: &M::Config,
    internal: Vec<NamedWeight>,
    raw: &[(&str, &[u8])],
    extra: &[(String, String)],
) -> Result<()> {
    let json =
        serde_json::to_string(config).map_err(|e| bad(path, format!("model config: {e}")))?;
    let mut metadata = HashMap::from([
        (FORMAT.to_string(), CHECKPOINT_FORMAT.to_string()),
        (VERSION.to_string(), env!("CARGO_PKG_VERSION").to_string()),
        (KIND.to_string(), M::KIND.to_string()),
        (CONFIG.to_string(), json),
    ]);
    for (key, value) in extra {
        if RESERVED.contains(&key.as_str()) || metadata.insert(key.clone(), value.clone()).is_some()
        {
            return Err(bad(
                path,
                format!(
                    "header entry {key} is written by the format itself; expected another name"
                ),
            ));
        }
    }
    let mut weights = model.weights();
    if let Some(w) = weights.iter().find(|w| w.name.starts_with(INTERNAL)) {
        return Err(bad(
            path,
            format!(
                "weight {} starts with {INTERNAL}, which the format keeps for its own tensors",
                w.name
            ),
        ));
    }
    weights.extend(internal);
    let bytes = serialize_safetensors(path, &weights, raw, metadata)?;
    write_atomically(path, &bytes)
}

/// Saves `model` (its kind, config and weights) to `path` atomically, in the format of the
/// trainer's checkpoints without their training state; [`load`] rebuilds it from the file
/// alone.
///
/// # Errors
/// A model that cannot describe itself by its config ([`Model::config`]), or a file that
/// cannot be written.
pub fn save<M: Model>(model: &M, path: &Path) -> Result<()> {
    write_saved(path, model, &model.config()?, Vec::new(), &[], &[])
}

/// Rebuilds a model saved by [`save`] or a [`Trainer`](crate::train::Trainer) checkpoint from
/// the file alone: as [`AnyModel`] any built-in kind, or as a given model type
/// (`padless::load::<MyModel>(path, &device)`) a file of that type's kind.
///
/// ```
/// # use padless::prelude::*;
/// # let device = default_device();
/// let model = Sequential::new(vec![AnyLayer::Embedding(EmbeddingConfig::new(5, 3).init(&device))]);
/// let path = std::env::temp_dir().join(format!("padless-load-doc-{}.safetensors", std::process::id()));
/// padless::save(&model, &path)?;
/// let AnyModel::Sequential(back) = padless::load(&path, &device)? else { panic!() };
/// assert_eq!(back.weights(), model.weights());
/// let typed: Sequential = padless::load(&path, &device)?;
/// assert_eq!(typed.names(), ["embedding"]);
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), padless::Error>(())
/// ```
///
/// # Errors
/// A missing, truncated or foreign file, another format version, a kind the requested type
/// cannot hold, or weights that do not fit the saved config, each naming the file.
pub fn load<L: Loadable>(path: &Path, device: &Device) -> Result<L> {
    read_saved(path)?.model(device)
}

/// The header entries of a model file or checkpoint (the format's own and those a caller
/// added, such as G2P's vocabularies), without reading its tensors.
///
/// # Errors
/// A missing, truncated or foreign file, or another format version.
pub fn checkpoint_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_header(path, &bytes)
}

/// What [`load`] can rebuild a saved model as: every [`Model`] (a file of its own kind) and
/// [`AnyModel`] (every built-in kind).
pub trait Loadable: Sized {
    /// The model saved as `kind` with `config` (JSON), with `weights` set.
    ///
    /// # Errors
    /// A kind this type cannot hold, a config that does not parse or build, or weights that
    /// do not fit.
    fn from_saved(
        kind: &str,
        config: &str,
        weights: &[NamedWeight],
        device: &Device,
    ) -> Result<Self>;
}

impl<M: Model> Loadable for M {
    fn from_saved(
        kind: &str,
        config: &str,
        weights: &[NamedWeight],
        device: &Device,
    ) -> Result<Self> {
        if kind != M::KIND {
            return Err(Error::config(
                "model file",
                format!("holds a {kind} model, expected {}", M::KIND),
            ));
        }
        let config: M::Config = serde_json::from_str(config)
            .map_err(|e| Error::config("model file", format!("{} config: {e}", M::KIND)))?;
        let mut model = M::build(&config, device)?;
        model.set_weights(weights)?;
        Ok(model)
    }
}

/// Any built-in model, as [`load`] rebuilds it from a file alone. A new built-in kind is one
/// variant here and one arm in [`AnyModel`]'s `from_saved`.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyModel {
    /// A [`Sequential`] stack (kind `sequential`).
    Sequential(Sequential),
    /// An [`EncoderDecoder`] (kind `encoder_decoder`; boxed, as it is much larger than a
    /// stack's handle).
    EncoderDecoder(Box<EncoderDecoder>),
    /// A [`Transformer`] (kind `transformer`; boxed, as the encoder-decoder).
    Transformer(Box<Transformer>),
}

impl AnyModel {
    /// The model's kind ([`Model::KIND`]).
    pub fn kind(&self) -> &'static str {
        match self {
            AnyModel::Sequential(_) => <Sequential as Model>::KIND,
            AnyModel::EncoderDecoder(_) => <EncoderDecoder as Model>::KIND,
            AnyModel::Transformer(_) => <Transformer as Model>::KIND,
        }
    }

    /// The model's weights ([`Model::weights`]).
    pub fn weights(&self) -> Vec<NamedWeight> {
        match self {
            AnyModel::Sequential(m) => Model::weights(m),
            AnyModel::EncoderDecoder(m) => Model::weights(m.as_ref()),
            AnyModel::Transformer(m) => Model::weights(m.as_ref()),
        }
    }
}

impl Loadable for AnyModel {
    fn from_saved(
        kind: &str,
        config: &str,
        weights: &[NamedWeight],
        device: &Device,
    ) -> Result<Self> {
        Ok(match kind {
            k if k == <Sequential as Model>::KIND => {
                AnyModel::Sequential(Loadable::from_saved(kind, config, weights, device)?)
            }
            k if k == <EncoderDecoder as Model>::KIND => AnyModel::EncoderDecoder(Box::new(
                Loadable::from_saved(kind, config, weights, device)?,
            )),
            k if k == <Transformer as Model>::KIND => AnyModel::Transformer(Box::new(
                Loadable::from_saved(kind, config, weights, device)?,
            )),
            other => {
                return Err(Error::config(
                    "model file",
                    format!(
                        "holds a {other} model, expected a built-in kind ({}, {}, {}); load a model of your own type with padless::load::<YourModel>",
                        <Sequential as Model>::KIND,
                        <EncoderDecoder as Model>::KIND,
                        <Transformer as Model>::KIND
                    ),
                ));
            }
        })
    }
}
