//! [`Recurrent`]: the mask-aware recurrent layer over any [`Cell`], and the masked time loop
//! written once for all of them.

use std::sync::{Arc, Mutex};

use burn::module::{Module, Param};
use burn::tensor::{Bool, Tensor};

use super::cell::Cell;
use super::config::RecurrentOptions;
use padless_kernels::Outputs;

use super::fused::{FusedInput, LoopParts, PairHalf, try_fused_loop, try_fused_pair};
use crate::error::{Error, Result};
use crate::layer::{Layer, LayerOutput, Spec};
use crate::mask::{Mask, Padding, check_mask_for, zero_masked};
use crate::registry::LayerConfig;
use crate::value::Value;
use crate::weights::{NamedWeight, load_param};

/// What a recurrent layer returns.
#[derive(Debug, Clone)]
pub struct RecurrentOutput {
    /// The output of every step in processing order, `[batch, time, d_hidden]`: the new `h` at
    /// a valid step; at a masked step the carried `h` (the initial `h` before the first valid
    /// step), or 0 with `zero_output_for_mask`.
    pub sequence: Tensor<3>,
    /// The output of each row's last valid step (its final `h`; the initial `h` for a row
    /// with no valid step), `[batch, d_hidden]`.
    pub last: Tensor<2>,
    /// The final states (`[h]` or `[h, c]`, `[batch, d_hidden]` each); masked steps never
    /// change them.
    pub states: Vec<Tensor<2>>,
    /// The mask of `sequence` (reversed with it for `go_backwards`).
    pub mask: Option<Mask>,
}

/// The states a stateful layer carries between calls. Clones of a layer share them, as one
/// Keras layer object does.
#[derive(Debug, Clone, Default)]
pub struct CarriedState(Arc<Mutex<Option<Vec<Tensor<2>>>>>);

impl CarriedState {
    fn get(&self) -> Option<Vec<Tensor<2>>> {
        self.0.lock().expect("carried state lock").clone()
    }

    fn set(&self, states: Option<Vec<Tensor<2>>>) {
        *self.0.lock().expect("carried state lock") = states;
    }
}

/// A mask-aware recurrent layer: [`Lstm`](super::Lstm), [`Gru`](super::Gru) or
/// [`SimpleRnn`](super::SimpleRnn).
///
/// # Shapes
/// Input `[batch, time, d_input]`; output `[batch, time, d_hidden]` with `return_sequences`,
/// else `[batch, d_hidden]`; states `[batch, d_hidden]` each.
///
/// # Masking
/// At a masked step the states are carried over unchanged, for any mask pattern (post- or
/// pre-padding, holes, rows with no valid step); the inputs of masked steps are selected out,
/// so they influence nothing and get a gradient of exactly 0. The mask passes on with
/// `return_sequences` (reversed for `go_backwards`); without it the output has no time axis
/// and no mask.
///
/// # Errors
/// Input features other than `d_input`, a mask that is not `[batch, time]`, an empty batch or
/// time axis, initial states of the wrong number or shape, or a stateful layer called with a
/// new batch size before `reset_states`.
#[derive(Module, Debug)]
pub struct Recurrent<C> {
    /// The cell.
    pub cell: C,
    /// The learned initial states (`[d_hidden]` each), when `learn_initial_state` is set.
    pub learned_initial_state: Option<Vec<Param<Tensor<1>>>>,
    /// The options; `d_input`, `units` and `use_bias` are the cell's.
    #[module(skip)]
    pub options: RecurrentOptions,
    #[module(skip)]
    carried: CarriedState,
}

impl<C: Cell> Recurrent<C> {
    /// A layer around `cell` with `options` (their sizes and `use_bias` are taken from the
    /// cell).
    pub fn new(cell: C, options: RecurrentOptions, device: &burn::tensor::Device) -> Self {
        let mut options = options;
        options.d_input = cell.d_input();
        options.units = cell.d_hidden();
        options.use_bias = cell.use_bias();
        let learned_initial_state = options.learn_initial_state.then(|| {
            (0..C::N_STATES)
                .map(|_| Param::from_tensor(Tensor::zeros([cell.d_hidden()], device)))
                .collect()
        });
        Recurrent {
            cell,
            learned_initial_state,
            options,
            carried: CarriedState::default(),
        }
    }

    /// Hidden units.
    pub fn d_hidden(&self) -> usize {
        self.cell.d_hidden()
    }

    /// Runs the layer over `x` with an optional mask and initial states (which take precedence
    /// over carried and learned ones).
    ///
    /// # Errors
    /// See the type's `# Errors`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        mask: Option<&Mask>,
        initial_state: Option<Vec<Tensor<2>>>,
    ) -> Result<RecurrentOutput> {
        let (x, mask) = self.in_processing_order(x, mask);
        let parts = self.run_parts(x, mask.as_ref(), initial_state, Outputs::All)?;
        Ok(self.output_of(parts, mask))
    }

    /// The same as [`Recurrent::forward`] on [`RepeatVector`](crate::layers::RepeatVector)'s
    /// output (`vector [batch, d_input]` repeated over `n_steps` steps, no mask, no given
    /// initial states), computed without materialising the repetition: the fused kernels
    /// project the vector once per row instead of once per step.
    ///
    /// # Errors
    /// As [`Recurrent::forward`].
    pub fn forward_repeated(&self, vector: Tensor<2>, n_steps: usize) -> Result<RecurrentOutput> {
        self.repeated(vector, n_steps, None, Outputs::All)
            .map(|parts| self.output_of(parts, None))
    }

    /// [`Recurrent::forward_repeated`] computing only the first `lengths[b]` steps of row `b`
    /// (packed: later steps cost nothing). Outputs at steps `>= lengths[b]` are zeros (or the
    /// last computed output, as `zero_output_for_mask` says) and the final states are those at
    /// step `lengths[b] - 1`; the returned mask is `None`, as `forward_repeated`'s.
    ///
    /// The outputs at steps `< lengths[b]` equal `forward_repeated`'s exactly (a forward
    /// recurrence is causal), so this replaces it wherever later steps are never read: a
    /// decoder whose loss is masked by target lengths. [`Sequential`](crate::sequential::Sequential) uses
    /// it that way during training.
    ///
    /// # Errors
    /// As [`Recurrent::forward`]; `lengths` not one per row or a length over `n_steps`.
    pub fn forward_repeated_prefix(
        &self,
        vector: Tensor<2>,
        n_steps: usize,
        lengths: &[usize],
    ) -> Result<RecurrentOutput> {
        let mask = self.prefix_mask(&vector, n_steps, lengths)?;
        self.repeated(vector, n_steps, Some(&mask), Outputs::All)
            .map(|parts| self.output_of(parts, None))
    }

    /// The layer's output on `RepeatVector`'s output, as [`Layer::forward_value`] (or, with
    /// `with_states`, [`Layer::forward_with_states`]) gives it (a sequence without mask, or
    /// the last output): [`Recurrent::forward_repeated_prefix`] over `prefix` where given and
    /// the options allow it (sequences returned, not stateful, forward in time), else
    /// [`Recurrent::forward_repeated`]. Only the parts the output holds are computed.
    fn repeated_output(
        &self,
        vector: Tensor<2>,
        n_steps: usize,
        prefix: Option<&[usize]>,
        with_states: bool,
    ) -> Result<LayerOutput> {
        let options = &self.options;
        let mask = match prefix {
            Some(lengths)
                if options.return_sequences && !options.stateful && !options.go_backwards =>
            {
                Some(self.prefix_mask(&vector, n_steps, lengths)?)
            }
            _ => None,
        };
        let outputs = self.outputs_read(with_states);
        let parts = self.repeated(vector, n_steps, mask.as_ref(), outputs)?;
        Ok(self.output_value(parts, None, with_states))
    }

    fn prefix_mask(&self, vector: &Tensor<2>, n_steps: usize, lengths: &[usize]) -> Result<Mask> {
        let batch = vector.dims()[0];
        let mask = Mask::from_lengths(lengths, n_steps, Padding::Post, &vector.device())?;
        mask.check(batch, n_steps, "decoder step lengths")?;
        Ok(mask)
    }

    fn repeated(
        &self,
        vector: Tensor<2>,
        n_steps: usize,
        mask: Option<&Mask>,
        outputs: Outputs,
    ) -> Result<LoopParts> {
        let [batch, features] = vector.dims();
        if features == self.cell.d_input() && batch > 0 && n_steps > 0 {
            let initial = self.initial_states(batch, None, &vector.device())?;
            let input = FusedInput::Repeated(&vector, n_steps, mask);
            let zero_output = self.options.zero_output_for_mask;
            if let Some(parts) = try_fused_loop(
                self.cell.fused_parts(),
                input,
                &initial,
                zero_output,
                outputs,
            ) {
                self.keep_states(&parts);
                return Ok(parts);
            }
        }
        let repeated = vector
            .unsqueeze_dim::<3>(1)
            .expand([batch, n_steps, features]);
        let (x, mask) = self.in_processing_order(repeated, mask);
        self.run_parts(x, mask.as_ref(), None, outputs)
    }

    /// Which parts of the loop [`Layer::forward_value`] reads: the sequence or the final
    /// states; both for a stateful layer (it carries its states) and, `with_states`, for a
    /// layer that returns sequences and states.
    fn outputs_read(&self, with_states: bool) -> Outputs {
        let options = &self.options;
        let states = options.stateful || (with_states && options.return_state);
        match (states, options.return_sequences) {
            (true, true) => Outputs::All,
            (false, true) => Outputs::Sequence,
            (_, false) => Outputs::States,
        }
    }

    /// The input and mask in processing order (reversed in time for `go_backwards`).
    fn in_processing_order(&self, x: Tensor<3>, mask: Option<&Mask>) -> (Tensor<3>, Option<Mask>) {
        if self.options.go_backwards {
            (x.flip([1]), mask.map(Mask::reverse_time))
        } else {
            (x, mask.cloned())
        }
    }

    /// A [`RecurrentOutput`] from a loop that ran with both parts.
    fn output_of(&self, parts: LoopParts, mask: Option<Mask>) -> RecurrentOutput {
        let (sequence, states) = parts.both();
        RecurrentOutput {
            sequence,
            last: states[0].clone(),
            states,
            mask,
        }
    }

    /// What the layer returns from a loop that ran with [`Recurrent::outputs_read`]: the
    /// sequence or the last output, and with `with_states` the final states of a layer with
    /// `return_state`.
    fn output_value(&self, parts: LoopParts, mask: Option<Mask>, with_states: bool) -> LayerOutput {
        let states = (with_states && self.options.return_state)
            .then(|| parts.states.clone().expect("the loop ran with its states"));
        let value = if self.options.return_sequences {
            Value::sequence(
                parts.sequence.expect("the loop ran with its sequence"),
                mask,
            )
        } else {
            let states = parts.states.expect("the loop ran with its states");
            Value::Vector(states[0].clone())
        };
        LayerOutput { value, states }
    }

    fn keep_carried(&self, states: &[Tensor<2>]) {
        if self.options.stateful {
            self.carried
                .set(Some(states.iter().map(|s| s.clone().detach()).collect()));
        }
    }

    fn keep_states(&self, parts: &LoopParts) {
        if self.options.stateful {
            self.keep_carried(
                parts
                    .states
                    .as_ref()
                    .expect("a stateful layer asks for its states"),
            );
        }
    }

    /// The loop in input order (no `go_backwards`): checks, initial states, stateful update;
    /// the parts `outputs` asks for (at least those).
    fn run_parts(
        &self,
        x: Tensor<3>,
        mask: Option<&Mask>,
        initial_state: Option<Vec<Tensor<2>>>,
        outputs: Outputs,
    ) -> Result<LoopParts> {
        let initial = self.checked_initial(&x, mask, initial_state)?;
        Ok(self.loop_and_keep(x, mask, initial, outputs))
    }

    /// `masked_loop` from checked initial states, then the stateful update.
    fn loop_and_keep(
        &self,
        x: Tensor<3>,
        mask: Option<&Mask>,
        initial: Vec<Tensor<2>>,
        outputs: Outputs,
    ) -> LoopParts {
        let zero_output = self.options.zero_output_for_mask;
        let parts = masked_loop(&self.cell, x, mask, initial, zero_output, outputs);
        self.keep_states(&parts);
        parts
    }

    /// The loop (both parts, as `run_parts` gives them) of this layer over `x` and of `other`
    /// over `x_other` (a `Bidirectional` layer's halves, no given initial states): one fused
    /// operation with the two loops side by side where it applies, else the two runs one
    /// after the other.
    pub(crate) fn run_pair(
        &self,
        other: &Recurrent<C>,
        x: Tensor<3>,
        x_other: Tensor<3>,
        mask: Option<&Mask>,
    ) -> Result<[(Tensor<3>, Vec<Tensor<2>>); 2]> {
        let initial = self.checked_initial(&x, mask, None)?;
        let initial_other = other.checked_initial(&x_other, mask, None)?;
        let zero_output = self.options.zero_output_for_mask;
        if zero_output == other.options.zero_output_for_mask
            && let Some(pair) = try_fused_pair(
                PairHalf {
                    parts: self.cell.fused_parts(),
                    x: &x,
                    initial: &initial,
                },
                PairHalf {
                    parts: other.cell.fused_parts(),
                    x: &x_other,
                    initial: &initial_other,
                },
                mask,
                zero_output,
            )
        {
            let [(_, first), (_, second)] = &pair;
            self.keep_carried(first);
            other.keep_carried(second);
            return Ok(pair);
        }
        Ok([
            self.loop_and_keep(x, mask, initial, Outputs::All).both(),
            other
                .loop_and_keep(x_other, mask, initial_other, Outputs::All)
                .both(),
        ])
    }

    /// Checks `x` and `mask` and returns the states the loop starts from.
    fn checked_initial(
        &self,
        x: &Tensor<3>,
        mask: Option<&Mask>,
        initial_state: Option<Vec<Tensor<2>>>,
    ) -> Result<Vec<Tensor<2>>> {
        let [batch, time, features] = x.dims();
        let name = C::TYPE_NAME;
        if features != self.cell.d_input() {
            return Err(Error::shape(
                name,
                format!("[batch, time, {}]", self.cell.d_input()),
                &x.dims(),
            ));
        }
        if batch == 0 || time == 0 {
            return Err(Error::shape(
                name,
                "a non-empty [batch, time, features]",
                &x.dims(),
            ));
        }
        check_mask_for(mask, &[batch, time], name)?;
        self.initial_states(batch, initial_state, &x.device())
    }

    fn initial_states(
        &self,
        batch: usize,
        given: Option<Vec<Tensor<2>>>,
        device: &burn::tensor::Device,
    ) -> Result<Vec<Tensor<2>>> {
        let d_hidden = self.d_hidden();
        if let Some(given) = given {
            if given.len() != C::N_STATES {
                return Err(Error::config(
                    C::TYPE_NAME,
                    format!(
                        "expected {} initial states, found {}",
                        C::N_STATES,
                        given.len()
                    ),
                ));
            }
            for state in &given {
                if state.dims() != [batch, d_hidden] {
                    return Err(Error::shape(
                        format!("{} initial state", C::TYPE_NAME),
                        format!("[{batch}, {d_hidden}]"),
                        &state.dims(),
                    ));
                }
            }
            return Ok(given);
        }
        if self.options.stateful
            && let Some(carried) = self.carried.get()
        {
            let carried_batch = carried[0].dims()[0];
            if carried_batch != batch {
                return Err(Error::config(
                    C::TYPE_NAME,
                    format!(
                        "stateful layer carries states for batch {carried_batch}, got batch {batch}; call reset_states first"
                    ),
                ));
            }
            return Ok(carried);
        }
        Ok(self.start_states(batch, device))
    }

    /// The states a sequence starts from without given or carried ones: the learned initial
    /// states broadcast over the batch, or zeros.
    pub fn start_states(&self, batch: usize, device: &burn::tensor::Device) -> Vec<Tensor<2>> {
        let d_hidden = self.d_hidden();
        match &self.learned_initial_state {
            Some(learned) => learned
                .iter()
                .map(|p| p.val().unsqueeze_dim::<2>(0).expand([batch, d_hidden]))
                .collect(),
            None => (0..C::N_STATES)
                .map(|_| Tensor::zeros([batch, d_hidden], device))
                .collect(),
        }
    }

    /// The states a stateful layer carries into its next call, if any.
    pub fn carried_states(&self) -> Option<Vec<Tensor<2>>> {
        self.carried.get()
    }

    /// Forgets the carried states: the next call starts from the learned initial states or
    /// zeros.
    pub fn reset_states(&self) {
        self.carried.set(None);
    }

    /// [`Layer::forward_value`], with the final states when `with_states` and the layer
    /// returns them. Only the parts the output holds are computed (see
    /// [`Recurrent::outputs_read`]).
    fn layer_output(&self, input: Value, with_states: bool) -> Result<LayerOutput> {
        let (x, mask) = input.into_sequence(C::TYPE_NAME)?;
        let (x, mask) = self.in_processing_order(x, mask.as_ref());
        let outputs = self.outputs_read(with_states);
        let parts = self.run_parts(x, mask.as_ref(), None, outputs)?;
        Ok(self.output_value(parts, mask, with_states))
    }
}

/// The masked time loop, in input order: the fused kernels where they apply (see
/// [`fused`](super::fused)), else the composite loop: one input projection for all steps,
/// then per step the cell and a selection between new and carried states by the mask.
pub(crate) fn masked_loop<C: Cell>(
    cell: &C,
    x: Tensor<3>,
    mask: Option<&Mask>,
    initial: Vec<Tensor<2>>,
    zero_output_for_mask: bool,
    outputs: Outputs,
) -> LoopParts {
    let input = FusedInput::Sequence(&x, mask);
    let parts = cell.fused_parts();
    if let Some(fused) = try_fused_loop(parts, input, &initial, zero_output_for_mask, outputs) {
        return fused;
    }
    let [batch, time, _] = x.dims();
    let d_hidden = cell.d_hidden();
    // Masked inputs are selected out before the projection, so NaN or inf there cannot reach
    // the weight gradients.
    let x = zero_masked(x, mask);
    let projected = cell.project_input(x);
    let step_masks: Option<Vec<Tensor<2, Bool>>> = mask.map(|mask| {
        mask.valid()
            .chunk(time, 1)
            .into_iter()
            .map(|m| m.expand([batch, d_hidden]))
            .collect()
    });
    let mut states = initial;
    let mut step_outputs = Vec::with_capacity(time);
    for (step_idx, input) in projected.chunk(time, 1).into_iter().enumerate() {
        let new_states = cell.step(input.squeeze_dim::<2>(1), &states);
        let output = match &step_masks {
            Some(step_masks) => {
                let valid = &step_masks[step_idx];
                states = states
                    .into_iter()
                    .zip(new_states)
                    .map(|(old, new)| old.mask_where(valid.clone(), new))
                    .collect();
                if zero_output_for_mask {
                    states[0].clone().mask_fill(valid.clone().bool_not(), 0.0)
                } else {
                    states[0].clone()
                }
            }
            None => {
                states = new_states;
                states[0].clone()
            }
        };
        step_outputs.push(output);
    }
    LoopParts {
        sequence: Some(Tensor::stack(step_outputs, 1)),
        states: Some(states),
    }
}

impl<C: Cell> Layer for Recurrent<C> {
    fn type_name(&self) -> &'static str {
        C::TYPE_NAME
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        self.layer_output(input, false).map(|out| out.value)
    }

    fn forward_with_states(&self, input: Value) -> Result<LayerOutput> {
        self.layer_output(input, true)
    }

    fn forward_repeated(
        &self,
        vector: &Tensor<2>,
        n_steps: usize,
        prefix: Option<&[usize]>,
        with_states: bool,
    ) -> Option<Result<LayerOutput>> {
        Some(self.repeated_output(vector.clone(), n_steps, prefix, with_states))
    }

    fn config(&self) -> Option<LayerConfig> {
        C::registered(self.options.for_cell()).map(LayerConfig::from)
    }

    fn reset_states(&self) {
        Recurrent::reset_states(self);
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        let (time, features, masked) = input.sequence_features(C::TYPE_NAME)?;
        if features != self.cell.d_input() {
            return Err(crate::layer::features_error(
                C::TYPE_NAME,
                self.cell.d_input(),
                features,
            ));
        }
        Ok(if self.options.return_sequences {
            Spec::Sequence {
                time,
                features: self.d_hidden(),
                masked,
            }
        } else {
            Spec::Vector {
                features: self.d_hidden(),
            }
        })
    }

    fn supports_mask(&self) -> bool {
        true
    }

    fn weights(&self) -> Vec<NamedWeight> {
        let mut weights = self.cell.weights();
        if let Some(learned) = &self.learned_initial_state {
            for (i, p) in learned.iter().enumerate() {
                weights.push(NamedWeight::from_param(INITIAL_NAMES[i], p));
            }
        }
        weights
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        self.cell.set_weights(weights)?;
        if let Some(learned) = &mut self.learned_initial_state {
            for (i, p) in learned.iter_mut().enumerate() {
                load_param(p, weights, INITIAL_NAMES[i])?;
            }
        }
        Ok(())
    }
}

const INITIAL_NAMES: [&str; 2] = ["initial_h", "initial_c"];
