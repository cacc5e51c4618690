//! The [`Layer`] trait shared by every layer of a stack, [`BuildLayer`], implemented by each
//! layer's config, and [`Spec`], the shape and mask a layer receives or produces, used to
//! check a stack before it runs.

use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};
use crate::registry::LayerConfig;
use crate::value::Value;
use crate::weights::NamedWeight;

/// The static description of a [`Value`]: its kind, sizes and whether a mask travels with it.
/// `time: None` means the time axis has no fixed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// Token ids `[batch, time]`.
    Tokens {
        /// Steps, if fixed.
        time: Option<usize>,
        /// Whether a mask travels with it.
        masked: bool,
    },
    /// `[batch, time, features]`.
    Sequence {
        /// Steps, if fixed.
        time: Option<usize>,
        /// Features per step.
        features: usize,
        /// Whether a mask travels with it.
        masked: bool,
    },
    /// `[batch, features]`.
    Vector {
        /// Features.
        features: usize,
    },
}

impl Spec {
    /// Whether a mask travels with this value.
    pub fn masked(&self) -> bool {
        match *self {
            Spec::Tokens { masked, .. } | Spec::Sequence { masked, .. } => masked,
            Spec::Vector { .. } => false,
        }
    }

    /// The shape as Keras prints it, `(None, 5, 3)`.
    pub fn shape_string(&self) -> String {
        let time = |t: Option<usize>| t.map_or("None".to_string(), |t| t.to_string());
        match *self {
            Spec::Tokens { time: t, .. } => format!("(None, {})", time(t)),
            Spec::Sequence {
                time: t, features, ..
            } => {
                format!("(None, {}, {features})", time(t))
            }
            Spec::Vector { features } => format!("(None, {features})"),
        }
    }

    /// The features of a sequence spec.
    ///
    /// # Errors
    /// [`Error::InputKind`] for other kinds.
    pub fn sequence_features(&self, layer: &str) -> Result<(Option<usize>, usize, bool)> {
        match *self {
            Spec::Sequence {
                time,
                features,
                masked,
            } => Ok((time, features, masked)),
            other => Err(kind_error(
                layer,
                "sequence [batch, time, features]",
                &other,
            )),
        }
    }
}

pub(crate) fn kind_error(layer: &str, expected: &str, found: &Spec) -> Error {
    Error::InputKind {
        layer: layer.to_string(),
        expected: expected.to_string(),
        found: found.shape_string(),
    }
}

pub(crate) fn features_error(layer: &str, expected: usize, found: usize) -> Error {
    Error::Config {
        layer: layer.to_string(),
        message: format!("expected {expected} input features, found {found}"),
    }
}

/// What a layer returns: its output and, for a layer configured to return them
/// (`return_state`), its final states.
#[derive(Debug, Clone)]
pub struct LayerOutput {
    /// The output.
    pub value: Value,
    /// The final states (`[h]` or `[h, c]` per direction, `[batch, units]` each), when the
    /// layer returns them.
    pub states: Option<Vec<Tensor<2>>>,
}

impl From<Value> for LayerOutput {
    fn from(value: Value) -> Self {
        LayerOutput {
            value,
            states: None,
        }
    }
}

/// A layer of a stack: a forward pass on [`Value`]s, its effect on shapes and masks, its
/// weights in Keras layout and the config that rebuilds it.
///
/// Every method but the first three has a default, which fits a stateless layer without
/// weights that is not part of the layer registry ([`crate::registry`]).
pub trait Layer {
    /// The layer's type name as the summary prints it (`Lstm`).
    fn type_name(&self) -> &'static str;

    /// Runs the layer.
    ///
    /// # Errors
    /// When the input is of the wrong kind or shape.
    fn forward_value(&self, input: Value) -> Result<Value>;

    /// The output spec for an input spec; errors name the layer and both shapes.
    ///
    /// # Errors
    /// When the input does not fit the layer.
    fn output_spec(&self, input: &Spec) -> Result<Spec>;

    /// Whether the layer honours a mask it receives (uses it or passes it on). A stack in
    /// which a mask reaches a layer that returns `false` is rejected at build time.
    fn supports_mask(&self) -> bool {
        false
    }

    /// The config that rebuilds this layer (fresh weights): its entry in the layer registry.
    /// `None` (the default) for a layer outside the registry, which runs in code but cannot
    /// stand in a [`Sequential`](crate::sequential::Sequential).
    fn config(&self) -> Option<LayerConfig> {
        None
    }

    /// Whether each output step depends only on the same input step (default false). Work
    /// upstream of a run of such layers may skip steps whose outputs nobody reads (see
    /// [`Sequential::forward_reading`](crate::sequential::Sequential::forward_reading)).
    fn is_per_step(&self) -> bool {
        false
    }

    /// Forgets the states a stateful layer carries between calls; nothing by default.
    fn reset_states(&self) {}

    /// Runs the layer and also returns its final states when it is configured to
    /// (`return_state`); by default [`Layer::forward_value`] with no states.
    ///
    /// # Errors
    /// As [`Layer::forward_value`].
    fn forward_with_states(&self, input: Value) -> Result<LayerOutput> {
        self.forward_value(input).map(LayerOutput::from)
    }

    /// For a layer fed by [`RepeatVector`](crate::layers::RepeatVector): its output on
    /// `vector [batch, d_input]` repeated over `n_steps` steps, computed without building the
    /// repetition, or `None` (the default) when the layer has no such path and runs on the
    /// repeated sequence. With `prefix`, a layer may compute only the first `prefix[b]`
    /// steps of row `b` when that leaves those outputs exact (a forward recurrence returning
    /// sequences); the caller reads no other step. `with_states` asks for the final states
    /// as [`Layer::forward_with_states`] gives them.
    ///
    /// # Errors
    /// As [`Layer::forward_value`].
    fn forward_repeated(
        &self,
        vector: &Tensor<2>,
        n_steps: usize,
        prefix: Option<&[usize]>,
        with_states: bool,
    ) -> Option<Result<LayerOutput>> {
        let _ = (vector, n_steps, prefix, with_states);
        None
    }

    /// The weights in Keras layout and order (`kernel`, `recurrent_kernel`, `bias`).
    fn weights(&self) -> Vec<NamedWeight> {
        Vec::new()
    }

    /// Replaces the weights, matched by name; every weight must be given with its shape.
    ///
    /// # Errors
    /// [`Error::Weight`] naming the missing weight or both shapes.
    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        crate::weights::expect_no_weights(self.type_name(), weights)
    }

    /// The number of scalar parameters.
    fn num_params(&self) -> usize {
        self.weights().iter().map(|w| w.values.len()).sum()
    }

    /// Saves this layer's weights (Keras names) to a safetensors file, atomically.
    ///
    /// # Errors
    /// When the file cannot be written.
    fn save_weights(&self, path: &std::path::Path) -> Result<()> {
        let metadata = std::collections::HashMap::from([
            ("format".to_string(), "padless".to_string()),
            ("layer".to_string(), self.type_name().to_string()),
        ]);
        crate::weights::save_safetensors(path, &self.weights(), &metadata)
    }

    /// Loads weights saved by [`Layer::save_weights`].
    ///
    /// # Errors
    /// A missing or truncated file, or weights of other names or shapes.
    fn load_weights(&mut self, path: &std::path::Path) -> Result<()> {
        let (weights, _) = crate::weights::load_safetensors(path)?;
        self.set_weights(&weights)
    }
}

/// A layer's own config: the options that rebuild it (Keras names), serialisable as one
/// entry of a model config. Implemented by each registered layer's config type.
pub trait BuildLayer {
    /// The layer it builds.
    type Layer: Layer;

    /// Builds the layer with fresh weights for inputs of spec `input`, from which it takes
    /// its input size (a size the config already holds must agree).
    ///
    /// # Errors
    /// An input the layer cannot take, or an invalid option, naming the layer.
    fn build(&self, input: &Spec, device: &Device) -> Result<Self::Layer>;

    /// The input features the config holds, for a layer whose config records them (a dense
    /// or recurrent layer built in code); `None` (the default) otherwise.
    fn d_input(&self) -> Option<usize> {
        None
    }
}

/// The features of a sequence or vector spec: the input size a layer takes from it.
///
/// # Errors
/// [`Error::InputKind`] for token ids.
pub(crate) fn input_features(spec: &Spec, layer: &str) -> Result<usize> {
    match *spec {
        Spec::Sequence { features, .. } | Spec::Vector { features } => Ok(features),
        other => Err(kind_error(
            layer,
            "sequence or vector (add an embedding before it)",
            &other,
        )),
    }
}

/// `held` (0 = not set) checked against the input size `found` of a spec.
///
/// # Errors
/// [`Error::Config`] naming both sizes.
pub(crate) fn agreed_d_input(layer: &str, held: usize, found: usize) -> Result<usize> {
    if held != 0 && held != found {
        return Err(features_error(layer, held, found));
    }
    Ok(found)
}

/// One row of a stack check: the spec a layer receives and the one it produces.
#[derive(Debug, Clone)]
pub struct SpecRow {
    /// The layer's name.
    pub name: String,
    /// What arrives.
    pub input: Spec,
    /// What leaves.
    pub output: Spec,
}

/// Propagates `input` through `layers`, checking shapes and that no mask is dropped silently.
///
/// # Errors
/// The first layer whose input does not fit, or [`Error::MaskDropped`] when a mask reaches a
/// layer that cannot honour it.
pub fn check_stack<'a>(
    layers: impl IntoIterator<Item = (&'a str, &'a dyn Layer)>,
    input: Spec,
) -> Result<Vec<SpecRow>> {
    let mut rows = Vec::new();
    let mut spec = input;
    for (name, layer) in layers {
        if spec.masked() && !layer.supports_mask() {
            return Err(Error::MaskDropped {
                layer: format!("{name} ({})", layer.type_name()),
            });
        }
        let output = layer.output_spec(&spec)?;
        rows.push(SpecRow {
            name: name.to_string(),
            input: spec,
            output,
        });
        spec = output;
    }
    Ok(rows)
}
