//! [`Bidirectional`]: a forward and a backward recurrent layer whose backward half reads each
//! row's valid steps reversed.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::cell::Cell;
use super::config::AnyRecurrentConfig;
use super::gru::GruCell;
use super::lstm::LstmCell;
use super::recurrent::{Recurrent, RecurrentOutput};
use super::simple_rnn::SimpleRnnCell;
use crate::error::{Error, Result};
use crate::layer::{BuildLayer, Layer, LayerOutput, Spec};
use crate::mask::{Mask, check_mask_for, zero_masked};
use crate::registry::LayerConfig;
use crate::tensor_util::int_tensor_from;
use crate::value::Value;
use crate::weights::{NamedWeight, strip_prefix};

/// How the two directions' outputs are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeMode {
    /// Forward then backward on the feature axis (`2 d_hidden` features).
    #[default]
    Concat,
    /// Element-wise sum.
    Sum,
    /// Element-wise product.
    Mul,
    /// Element-wise mean.
    Ave,
}

impl MergeMode {
    fn merge<const D: usize>(self, forward: Tensor<D>, backward: Tensor<D>) -> Tensor<D> {
        match self {
            MergeMode::Concat => Tensor::cat(vec![forward, backward], D - 1),
            MergeMode::Sum => forward + backward,
            MergeMode::Mul => forward * backward,
            MergeMode::Ave => (forward + backward) / 2.0,
        }
    }

    fn width(self, d_hidden: usize) -> usize {
        match self {
            MergeMode::Concat => 2 * d_hidden,
            _ => d_hidden,
        }
    }
}

/// Runs one recurrent layer forward and another over each row's **valid part reversed**, so
/// the backward half equals running it on the unpadded sequence, whatever the padding side
/// (holes stay in place and carry state).
///
/// # Shapes
/// Input `[batch, time, d_input]`; output `[batch, time, w]` with `return_sequences`, else
/// `[batch, w]`, where `w = 2 d_hidden` for [`MergeMode::Concat`] and `d_hidden` otherwise.
/// States: the forward layer's, then the backward layer's.
///
/// # Masking
/// With `return_sequences` both halves are in input time order, masked positions are 0 and
/// the mask passes on. Without it, the output merges the forward final `h` with the backward
/// final `h` (after the row's first valid step) and has no mask.
#[derive(Module, Debug)]
pub struct Bidirectional<C> {
    /// The forward layer.
    pub forward: Recurrent<C>,
    /// The backward layer (run over reversed valid parts).
    pub backward: Recurrent<C>,
    /// How outputs are merged.
    #[module(skip)]
    pub merge_mode: MergeMode,
}

impl<C: Cell> Bidirectional<C> {
    /// Wraps two layers; `return_sequences` and `return_state` are read from the forward
    /// layer.
    pub fn new(forward: Recurrent<C>, backward: Recurrent<C>, merge_mode: MergeMode) -> Self {
        Bidirectional {
            forward,
            backward,
            merge_mode,
        }
    }

    /// Runs both directions; `sequence` and `last` are merged, `states` are the forward
    /// layer's then the backward layer's.
    ///
    /// # Errors
    /// As [`Recurrent::forward`].
    pub fn forward(&self, x: Tensor<3>, mask: Option<&Mask>) -> Result<RecurrentOutput> {
        let [batch, time, features] = x.dims();
        check_mask_for(mask, &[batch, time], "Bidirectional")?;
        let order = reversal_order(mask, batch, time, &x.device());
        // Whole feature rows move, so a row selection over `[batch * time, width]` does it
        // (far cheaper than an element-wise gather, forward and backward).
        let gather = |t: Tensor<3>, width: usize| {
            t.reshape([batch * time, width])
                .select(0, order.clone())
                .reshape([batch, time, width])
        };
        // Both halves in one call: side by side on two threads where the fused path applies.
        let reversed = gather(x.clone(), features);
        let [(seq_f, states_f), (seq_b, states_b)] =
            self.forward.run_pair(&self.backward, x, reversed, mask)?;
        let seq_b = gather(seq_b, self.backward.d_hidden());
        let mut sequence = self.merge_mode.merge(seq_f, seq_b);
        sequence = zero_masked(sequence, mask);
        let last = self
            .merge_mode
            .merge(states_f[0].clone(), states_b[0].clone());
        Ok(RecurrentOutput {
            sequence,
            last,
            states: states_f.into_iter().chain(states_b).collect(),
            mask: mask.cloned(),
        })
    }

    /// Forgets the carried states of both directions.
    pub fn reset_states(&self) {
        self.forward.reset_states();
        self.backward.reset_states();
    }
}

/// For each step `b * time + t` of the flattened batch, the step it reads from so that each
/// row's valid steps come in reverse order and masked steps stay in place: `[batch * time]`.
/// It is its own inverse, so it also puts the backward outputs back in input order.
fn reversal_order(
    mask: Option<&Mask>,
    batch: usize,
    time: usize,
    device: &burn::tensor::Device,
) -> Tensor<1, Int> {
    let valid = mask.map_or_else(|| vec![true; batch * time], Mask::to_vec);
    let mut order = Vec::with_capacity(batch * time);
    for (b, row) in valid.chunks(time).enumerate() {
        let positions: Vec<usize> = (0..time).filter(|&t| row[t]).collect();
        let mut row_order: Vec<i64> = (0..time as i64).collect();
        for (j, &p) in positions.iter().enumerate() {
            row_order[p] = positions[positions.len() - 1 - j] as i64;
        }
        order.extend(row_order.into_iter().map(|t| (b * time) as i64 + t));
    }
    int_tensor_from(&order, [batch * time], device)
}

impl<C: Cell> Layer for Bidirectional<C> {
    fn type_name(&self) -> &'static str {
        "Bidirectional"
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        self.forward_with_states(input).map(|out| out.value)
    }

    fn forward_with_states(&self, input: Value) -> Result<LayerOutput> {
        let (x, mask) = input.into_sequence("Bidirectional")?;
        let out = self.forward(x, mask.as_ref())?;
        let options = &self.forward.options;
        let value = if options.return_sequences {
            Value::sequence(out.sequence, out.mask)
        } else {
            Value::Vector(out.last)
        };
        let states = options.return_state.then_some(out.states);
        Ok(LayerOutput { value, states })
    }

    fn config(&self) -> Option<LayerConfig> {
        let layer = C::registered(self.forward.options.for_cell())?;
        Some(LayerConfig::Bidirectional(BidirectionalConfig {
            layer,
            merge_mode: self.merge_mode,
        }))
    }

    fn reset_states(&self) {
        Bidirectional::reset_states(self);
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        let width = self.merge_mode.width(self.forward.d_hidden());
        Ok(match self.forward.output_spec(input)? {
            Spec::Sequence { time, masked, .. } => Spec::Sequence {
                time,
                features: width,
                masked,
            },
            _ => Spec::Vector { features: width },
        })
    }

    fn supports_mask(&self) -> bool {
        true
    }

    fn weights(&self) -> Vec<NamedWeight> {
        let prefixed = |layer: &Recurrent<C>, prefix: &str| {
            layer
                .weights()
                .into_iter()
                .map(|w| w.prefixed(prefix))
                .collect::<Vec<_>>()
        };
        let mut weights = prefixed(&self.forward, "forward");
        weights.extend(prefixed(&self.backward, "backward"));
        weights
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        self.forward
            .set_weights(&strip_prefix(weights, "forward"))?;
        self.backward
            .set_weights(&strip_prefix(weights, "backward"))
    }
}

/// Configuration of a [`Bidirectional`] layer (Keras `Bidirectional(layer, merge_mode)`):
/// the recurrent layer whose copy runs in each direction, and the merge. In a model config:
/// `{"type": "bidirectional", "merge_mode": "concat", "layer": {"type": "gru", "units": 16,
/// "return_sequences": true}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BidirectionalConfig {
    /// The recurrent layer each direction runs (its `go_backwards` must be false: the
    /// backward half reads each row's valid part reversed).
    pub layer: AnyRecurrentConfig,
    /// How the directions' outputs are merged (default `concat`).
    #[serde(default)]
    pub merge_mode: MergeMode,
}

impl BuildLayer for BidirectionalConfig {
    type Layer = AnyBidirectional;

    fn build(&self, input: &Spec, device: &Device) -> Result<AnyBidirectional> {
        if self.layer.options().go_backwards {
            return Err(Error::config(
                "Bidirectional",
                "expected go_backwards = false in the wrapped layer (the backward half reads \
                 each row's valid steps reversed), found true",
            ));
        }
        let merge = self.merge_mode;
        Ok(match self.layer {
            AnyRecurrentConfig::Lstm(c) => {
                AnyBidirectional::Lstm(c.build(input, device)?.into_bidirectional(merge, device))
            }
            AnyRecurrentConfig::Gru(c) => {
                AnyBidirectional::Gru(c.build(input, device)?.into_bidirectional(merge, device))
            }
            AnyRecurrentConfig::SimpleRnn(c) => AnyBidirectional::SimpleRnn(
                c.build(input, device)?.into_bidirectional(merge, device),
            ),
        })
    }

    fn d_input(&self) -> Option<usize> {
        Some(self.layer.options().d_input).filter(|&d| d > 0)
    }
}

impl<C: Cell> Recurrent<C> {
    /// This layer as the forward half of a [`Bidirectional`] pair whose backward half is a
    /// fresh layer with the same options.
    fn into_bidirectional(self, merge_mode: MergeMode, device: &Device) -> Bidirectional<C> {
        let backward = self.options.for_cell::<C>().init(device);
        Bidirectional::new(self, backward, merge_mode)
    }
}

/// A [`Bidirectional`] layer of any registered cell: the layer registry's entry for
/// `bidirectional`.
#[derive(Module, Debug)]
#[allow(missing_docs)]
pub enum AnyBidirectional {
    Lstm(Bidirectional<LstmCell>),
    Gru(Bidirectional<GruCell>),
    SimpleRnn(Bidirectional<SimpleRnnCell>),
}

macro_rules! each_direction_pair {
    ($value:expr, $pair:ident => $body:expr) => {
        match $value {
            AnyBidirectional::Lstm($pair) => $body,
            AnyBidirectional::Gru($pair) => $body,
            AnyBidirectional::SimpleRnn($pair) => $body,
        }
    };
}

impl AnyBidirectional {
    /// The layer behind the [`Layer`] trait.
    pub fn as_layer(&self) -> &dyn Layer {
        each_direction_pair!(self, pair => pair)
    }

    /// The layer behind the [`Layer`] trait, mutable.
    pub fn as_layer_mut(&mut self) -> &mut dyn Layer {
        each_direction_pair!(self, pair => pair)
    }
}

impl From<Bidirectional<LstmCell>> for AnyBidirectional {
    fn from(pair: Bidirectional<LstmCell>) -> Self {
        AnyBidirectional::Lstm(pair)
    }
}

impl From<Bidirectional<GruCell>> for AnyBidirectional {
    fn from(pair: Bidirectional<GruCell>) -> Self {
        AnyBidirectional::Gru(pair)
    }
}

impl From<Bidirectional<SimpleRnnCell>> for AnyBidirectional {
    fn from(pair: Bidirectional<SimpleRnnCell>) -> Self {
        AnyBidirectional::SimpleRnn(pair)
    }
}

impl Layer for AnyBidirectional {
    fn type_name(&self) -> &'static str {
        self.as_layer().type_name()
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        self.as_layer().forward_value(input)
    }

    fn forward_with_states(&self, input: Value) -> Result<LayerOutput> {
        self.as_layer().forward_with_states(input)
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        self.as_layer().output_spec(input)
    }

    fn supports_mask(&self) -> bool {
        true
    }

    fn config(&self) -> Option<LayerConfig> {
        self.as_layer().config()
    }

    fn reset_states(&self) {
        self.as_layer().reset_states();
    }

    fn weights(&self) -> Vec<NamedWeight> {
        self.as_layer().weights()
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        self.as_layer_mut().set_weights(weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::default_device;
    use crate::tensor_util::i64_vec;

    #[test]
    fn reversal_order_reverses_valid_steps_and_keeps_holes() {
        let device = default_device();
        let mask = Mask::from_bools(
            &[true, false, true, true, false, false, true, true],
            2,
            4,
            &device,
        )
        .unwrap();
        let order = i64_vec(reversal_order(Some(&mask), 2, 4, &device));
        assert_eq!(order, vec![3, 1, 2, 0, 4, 5, 7, 6]);
    }
}
