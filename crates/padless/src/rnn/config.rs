//! [`RecurrentConfig`]: the options of every recurrent layer (Keras names and defaults),
//! shared by [`LstmConfig`], [`GruConfig`], [`SimpleRnnConfig`] and [`Bidirectional`]'s
//! halves; [`AnyRecurrentConfig`], one of them chosen by its `type`; and the layer types.

use std::fmt;
use std::marker::PhantomData;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::bidirectional::{Bidirectional, MergeMode};
use super::cell::Cell;
use super::gru::GruCell;
use super::lstm::LstmCell;
use super::recurrent::Recurrent;
use super::simple_rnn::SimpleRnnCell;
use crate::error::{Error, Result};
use crate::layer::{BuildLayer, Spec, agreed_d_input};

/// A mask-aware LSTM layer (Keras `LSTM`).
pub type Lstm = Recurrent<LstmCell>;
/// A mask-aware GRU layer (Keras `GRU`, `reset_after=True`).
pub type Gru = Recurrent<GruCell>;
/// A mask-aware Elman RNN layer (Keras `SimpleRNN`).
pub type SimpleRnn = Recurrent<SimpleRnnCell>;

/// The options of a recurrent layer without its cell: what a [`Recurrent`] layer holds.
pub type RecurrentOptions = RecurrentConfig<()>;

/// Configuration of an [`Lstm`].
pub type LstmConfig = RecurrentConfig<LstmCell>;
/// Configuration of a [`Gru`].
pub type GruConfig = RecurrentConfig<GruCell>;
/// Configuration of a [`SimpleRnn`].
pub type SimpleRnnConfig = RecurrentConfig<SimpleRnnCell>;

/// Configuration of a recurrent layer over cell `C`: Keras' option names and defaults.
///
/// In a model config the layer is `{"type": "lstm", "units": 8, "return_sequences": true}`
/// (or `gru`, `simple_rnn`); `d_input` is not written there, it is the previous layer's
/// output size. Unknown fields are rejected.
///
/// # Example
/// ```
/// use padless::prelude::*;
/// let lstm = LstmConfig::new(3, 8).with_return_sequences(true).init(&default_device());
/// assert_eq!(lstm.d_hidden(), 8);
/// // As a layer of a model config, whose input size is inferred:
/// let config = LstmConfig { units: 8, return_sequences: true, ..Default::default() };
/// assert_eq!(config, LstmConfig::new(0, 8).with_return_sequences(true));
/// ```
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound = "")]
pub struct RecurrentConfig<C> {
    /// Input features per step (inferred from the previous layer in a model config).
    #[serde(skip)]
    pub d_input: usize,
    /// Hidden units.
    pub units: usize,
    /// Use biases (default true).
    #[serde(default = "yes")]
    pub use_bias: bool,
    /// Return every step's output, `[batch, time, units]` (default false: each row's last
    /// valid step's output, `[batch, units]`).
    #[serde(default)]
    pub return_sequences: bool,
    /// Also return the final states (`[h]` or `[h, c]`, `[batch, units]` each) beside the
    /// output (default false): in a stack through
    /// [`Sequential::forward_with_states`](crate::sequential::Sequential::forward_with_states).
    /// The typed [`Recurrent::forward`] always returns them.
    #[serde(default)]
    pub return_state: bool,
    /// Process steps from last to first; outputs (and their mask) come in processing order
    /// (default false).
    #[serde(default)]
    pub go_backwards: bool,
    /// Output 0 at masked steps instead of the carried output (default false).
    #[serde(default)]
    pub zero_output_for_mask: bool,
    /// Carry final states to the next call until `reset_states` (default false).
    #[serde(default)]
    pub stateful: bool,
    /// Learn the initial states (parameters `[units]` per state, broadcast over the batch)
    /// instead of starting from zeros (default false).
    #[serde(default)]
    pub learn_initial_state: bool,
    /// The cell type, a marker holding no data (`..Default::default()` fills it).
    #[serde(skip)]
    pub cell: PhantomData<fn() -> C>,
}

fn yes() -> bool {
    true
}

// Written out rather than derived: derives would require the cell type itself to be
// `Clone`, `PartialEq`... although only a marker of it is held.
impl<C> Clone for RecurrentConfig<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for RecurrentConfig<C> {}

impl<C> PartialEq for RecurrentConfig<C> {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields()
    }
}

impl<C> Eq for RecurrentConfig<C> {}

impl<C> fmt::Debug for RecurrentConfig<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecurrentConfig")
            .field("d_input", &self.d_input)
            .field("units", &self.units)
            .field("use_bias", &self.use_bias)
            .field("return_sequences", &self.return_sequences)
            .field("return_state", &self.return_state)
            .field("go_backwards", &self.go_backwards)
            .field("zero_output_for_mask", &self.zero_output_for_mask)
            .field("stateful", &self.stateful)
            .field("learn_initial_state", &self.learn_initial_state)
            .finish()
    }
}

impl<C> Default for RecurrentConfig<C> {
    /// No sizes (0), every option at Keras' default.
    fn default() -> Self {
        Self::new(0, 0)
    }
}

impl<C> RecurrentConfig<C> {
    /// `d_input` input features, `units` hidden units, every option at Keras' default.
    pub fn new(d_input: usize, units: usize) -> Self {
        RecurrentConfig {
            d_input,
            units,
            use_bias: true,
            return_sequences: false,
            return_state: false,
            go_backwards: false,
            zero_output_for_mask: false,
            stateful: false,
            learn_initial_state: false,
            cell: PhantomData,
        }
    }

    /// Sets [`RecurrentConfig::use_bias`].
    pub fn with_use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// Sets [`RecurrentConfig::return_sequences`].
    pub fn with_return_sequences(mut self, return_sequences: bool) -> Self {
        self.return_sequences = return_sequences;
        self
    }

    /// Sets [`RecurrentConfig::return_state`].
    pub fn with_return_state(mut self, return_state: bool) -> Self {
        self.return_state = return_state;
        self
    }

    /// Sets [`RecurrentConfig::go_backwards`].
    pub fn with_go_backwards(mut self, go_backwards: bool) -> Self {
        self.go_backwards = go_backwards;
        self
    }

    /// Sets [`RecurrentConfig::zero_output_for_mask`].
    pub fn with_zero_output_for_mask(mut self, zero_output_for_mask: bool) -> Self {
        self.zero_output_for_mask = zero_output_for_mask;
        self
    }

    /// Sets [`RecurrentConfig::stateful`].
    pub fn with_stateful(mut self, stateful: bool) -> Self {
        self.stateful = stateful;
        self
    }

    /// Sets [`RecurrentConfig::learn_initial_state`].
    pub fn with_learn_initial_state(mut self, learn_initial_state: bool) -> Self {
        self.learn_initial_state = learn_initial_state;
        self
    }

    /// The same options for another cell.
    pub fn for_cell<D>(self) -> RecurrentConfig<D> {
        let RecurrentConfig {
            d_input,
            units,
            use_bias,
            return_sequences,
            return_state,
            go_backwards,
            zero_output_for_mask,
            stateful,
            learn_initial_state,
            cell: _,
        } = self;
        RecurrentConfig {
            d_input,
            units,
            use_bias,
            return_sequences,
            return_state,
            go_backwards,
            zero_output_for_mask,
            stateful,
            learn_initial_state,
            cell: PhantomData,
        }
    }

    fn fields(&self) -> (usize, usize, [bool; 7]) {
        (
            self.d_input,
            self.units,
            [
                self.use_bias,
                self.return_sequences,
                self.return_state,
                self.go_backwards,
                self.zero_output_for_mask,
                self.stateful,
                self.learn_initial_state,
            ],
        )
    }
}

impl<C: Cell> RecurrentConfig<C> {
    /// Builds the layer with Keras' initialisation.
    pub fn init(&self, device: &Device) -> Recurrent<C> {
        let cell = C::init(self.d_input, self.units, self.use_bias, device);
        Recurrent::new(cell, self.for_cell(), device)
    }

    /// Builds a [`Bidirectional`] pair of layers with independent weights; `go_backwards` is
    /// ignored (the backward half reads each row's valid part reversed).
    pub fn init_bidirectional(&self, merge_mode: MergeMode, device: &Device) -> Bidirectional<C> {
        let config = self.with_go_backwards(false);
        Bidirectional::new(config.init(device), config.init(device), merge_mode)
    }

    /// This config with `d_input` taken from `input`, checked against the one it holds
    /// (0 = not set).
    fn for_input(&self, input: &Spec) -> Result<Self> {
        let (_, features, _) = input.sequence_features(C::TYPE_NAME)?;
        let d_input = agreed_d_input(C::TYPE_NAME, self.d_input, features)?;
        if self.units == 0 {
            return Err(Error::config(C::TYPE_NAME, "units must be at least 1"));
        }
        Ok(RecurrentConfig { d_input, ..*self })
    }
}

impl<C: Cell> BuildLayer for RecurrentConfig<C> {
    type Layer = Recurrent<C>;

    fn build(&self, input: &Spec, device: &Device) -> Result<Recurrent<C>> {
        Ok(self.for_input(input)?.init(device))
    }

    fn d_input(&self) -> Option<usize> {
        (self.d_input > 0).then_some(self.d_input)
    }
}

/// The config of a recurrent layer of any registered cell, chosen by its `type` (`lstm`,
/// `gru`, `simple_rnn`): the layer a [`BidirectionalConfig`](super::BidirectionalConfig)
/// wraps. Unknown fields are rejected, naming the nearest known one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnyRecurrentConfig {
    /// An LSTM.
    Lstm(LstmConfig),
    /// A GRU.
    Gru(GruConfig),
    /// A simple RNN.
    SimpleRnn(SimpleRnnConfig),
}

impl AnyRecurrentConfig {
    /// The options, whatever the cell.
    pub fn options(&self) -> RecurrentOptions {
        match *self {
            AnyRecurrentConfig::Lstm(c) => c.for_cell(),
            AnyRecurrentConfig::Gru(c) => c.for_cell(),
            AnyRecurrentConfig::SimpleRnn(c) => c.for_cell(),
        }
    }

    /// Reads `{"type": ..., ...}`, checking every field; `context` names it in errors.
    pub(crate) fn from_json(json: serde_json::Value, context: &str) -> Result<Self, String> {
        const TYPES: [&str; 3] = ["lstm", "gru", "simple_rnn"];
        let (tag, object) = crate::strict::split_tag(json, "type", context)?;
        let within = format!("{context} ({tag})");
        match tag.as_str() {
            "lstm" => crate::strict::from_object(object, &within).map(Self::Lstm),
            "gru" => crate::strict::from_object(object, &within).map(Self::Gru),
            "simple_rnn" => crate::strict::from_object(object, &within).map(Self::SimpleRnn),
            other => Err(crate::strict::unknown(
                "recurrent layer type",
                other,
                context,
                &TYPES,
            )),
        }
    }
}

impl<'de> Deserialize<'de> for AnyRecurrentConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = serde_json::Value::deserialize(deserializer)?;
        Self::from_json(json, "the wrapped layer").map_err(serde::de::Error::custom)
    }
}
