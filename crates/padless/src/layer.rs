//! The [`Layer`] trait shared by every layer of a stack, and [`Spec`], the shape and mask
//! a layer receives or produces, used to check a stack before it runs.

use crate::error::{Error, Result};
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

/// A layer of a stack: a forward pass on [`Value`]s, its effect on shapes and masks, and its
/// weights in Keras layout.
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
