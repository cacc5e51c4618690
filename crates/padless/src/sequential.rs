//! [`Sequential`]: a stack of layers, checked for shapes and dropped masks, with a summary,
//! weight files and the config that rebuilds it.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::layer::{Layer, LayerOutput, Spec, SpecRow, check_stack};
use crate::model_config::{InputConfig, ModelConfig};
pub use crate::registry::AnyLayer;
use crate::value::Value;
use crate::weights::{NamedWeight, load_safetensors, save_safetensors, strip_prefix};

/// A stack of layers run one after another (Keras `Sequential`).
///
/// Layers are named as Keras names them (`lstm`, `lstm_1`, `dense`…); weight files use
/// `"{layer}/{weight}"`.
///
/// # Masking
/// Each layer gets the mask its predecessor returns. [`Sequential::check`] rejects a stack in
/// which a mask reaches a layer that cannot honour it, and [`Sequential::summary`] shows per
/// layer whether a mask arrives and whether one leaves.
#[derive(Module, Debug)]
pub struct Sequential {
    /// The layers, in order.
    pub layers: Vec<AnyLayer>,
    #[module(skip)]
    names: Vec<String>,
    #[module(skip)]
    input: Option<InputConfig>,
}

/// The final states one layer of a stack returned (a recurrent layer with `return_state`).
#[derive(Debug, Clone)]
pub struct LayerStates {
    /// The layer's name in the stack (`lstm_1`).
    pub layer: String,
    /// `[h]` or `[h, c]` (per direction for `Bidirectional`, forward first), `[batch, units]`
    /// each.
    pub states: Vec<Tensor<2>>,
}

impl Sequential {
    /// A stack of `layers`.
    pub fn new(layers: Vec<AnyLayer>) -> Self {
        let names = layer_names(layers.iter().map(|layer| layer.as_layer().type_name()));
        Sequential {
            layers,
            names,
            input: None,
        }
    }

    /// This stack with the input it takes recorded, for [`Sequential::config`] (a stack built
    /// by [`ModelConfig::build`] records it already).
    pub fn with_input(mut self, input: InputConfig) -> Self {
        self.input = Some(input);
        self
    }

    /// The input the stack takes: the recorded one, else inferred from the first layer that
    /// records its input size (an embedding takes token ids; a dense or recurrent layer built
    /// in code, a sequence of its `d_input` features, through the size-keeping layers before
    /// it).
    ///
    /// # Errors
    /// [`Error::Config`] when neither is known.
    pub fn input(&self) -> Result<InputConfig> {
        if let Some(input) = self.input {
            return Ok(input);
        }
        let unknown = || {
            Error::config(
                "Sequential",
                "expected a recorded input (Sequential::with_input) or a first layer that \
                 records its input size, found neither",
            )
        };
        let layer_input = self.layers.iter().find_map(|layer| match layer {
            AnyLayer::Embedding(_) => Some(InputConfig::Tokens { time: None }),
            other => other
                .config()
                .d_input()
                .map(|features| InputConfig::Sequence {
                    time: None,
                    features,
                }),
        });
        let input = layer_input.ok_or_else(unknown)?;
        self.check(input.spec(true)).map_err(|_| unknown())?;
        Ok(input)
    }

    /// The config that rebuilds this stack (fresh weights; [`Sequential::set_weights`] then
    /// restores trained ones): its input (see [`Sequential::input`]) and each layer's config.
    ///
    /// # Errors
    /// As [`Sequential::input`].
    pub fn config(&self) -> Result<ModelConfig> {
        Ok(ModelConfig {
            input: self.input()?,
            layers: self.layers.iter().map(AnyLayer::config).collect(),
        })
    }

    /// The layer names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn named(&self) -> impl Iterator<Item = (&str, &dyn Layer)> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.layers.iter().map(AnyLayer::as_layer))
    }

    /// Checks the stack for `input`: shapes fit and no mask is dropped silently.
    ///
    /// # Errors
    /// The first layer that does not fit, or [`Error::MaskDropped`].
    pub fn check(&self, input: Spec) -> Result<Vec<SpecRow>> {
        check_stack(self.named(), input)
    }

    /// The layer that consumed the inputs' mask when the stack's output has none (the name a
    /// loss warning cites, see [`LossInputs::with_mask_dropped_by`](crate::losses::LossInputs::with_mask_dropped_by)).
    ///
    /// # Errors
    /// As [`Sequential::check`].
    pub fn mask_dropped_by(&self, input: Spec) -> Result<Option<String>> {
        let rows = self.check(input)?;
        if rows.last().is_some_and(|row| row.output.masked()) {
            return Ok(None);
        }
        Ok(rows
            .iter()
            .rev()
            .find(|row| row.input.masked() && !row.output.masked())
            .map(|row| row.name.clone()))
    }

    /// Runs every layer.
    ///
    /// # Errors
    /// The first layer's error.
    pub fn forward(&self, input: Value) -> Result<Value> {
        self.forward_reading(input, None)
    }

    /// [`Sequential::forward`] for a loss that reads output step `t` of row `b` only where
    /// `t < read_steps[b]` (a loss masked by target lengths: `read_steps[b]` is one past the
    /// row's last valid target step). A recurrent decoder fed by `RepeatVector` and followed
    /// only by per-step layers ([`Layer::is_per_step`]: Dense, TimeDistributed, Dropout,
    /// Activation, LayerNormalization) then computes only those steps, which the causal recurrence makes
    /// exact: the outputs at the read steps, and so the loss and every gradient, equal
    /// [`Sequential::forward`]'s; outputs at the other steps differ from the full run's. The
    /// Trainer calls this with the batch's target mask. Any other stack runs as
    /// [`Sequential::forward`].
    ///
    /// # Errors
    /// The first layer's error.
    pub fn forward_reading(&self, input: Value, read_steps: Option<&[usize]>) -> Result<Value> {
        self.run(input, read_steps, false).map(|(value, _)| value)
    }

    /// [`Sequential::forward`], also returning the final states of every layer configured
    /// with `return_state` (Keras' `return_state`, for a stack whose states feed another
    /// model, such as an encoder's into a decoder), in layer order.
    ///
    /// # Errors
    /// The first layer's error.
    pub fn forward_with_states(&self, input: Value) -> Result<(Value, Vec<LayerStates>)> {
        self.run(input, None, true)
    }

    /// Runs every layer; see [`Sequential::forward_reading`] for `read_steps`. With
    /// `with_states`, each layer runs through [`Layer::forward_with_states`] and the states it
    /// returns are collected.
    fn run(
        &self,
        input: Value,
        read_steps: Option<&[usize]>,
        with_states: bool,
    ) -> Result<(Value, Vec<LayerStates>)> {
        let mut value = input;
        let mut states = Vec::new();
        let mut layers = self.layers.iter().zip(&self.names).enumerate().peekable();
        while let Some((i, (layer, name))) = layers.next() {
            // A recurrent layer fed by RepeatVector sees the same input at every step: it runs
            // on the vector itself (same result, one input projection per row).
            if let (AnyLayer::RepeatVector(repeat), Value::Vector(vector)) = (layer, &value)
                && let Some(&(_, (next, next_name))) = layers.peek()
            {
                let rows = vector.dims()[0];
                let prefix = read_steps.filter(|steps| {
                    steps.len() == rows
                        && steps.iter().all(|&s| s <= repeat.n_steps)
                        && self.layers[i + 2..]
                            .iter()
                            .all(|l| l.as_layer().is_per_step())
                });
                if let Some(out) =
                    next.as_layer()
                        .forward_repeated(vector, repeat.n_steps, prefix, with_states)
                {
                    value = keep_states(out?, next_name, &mut states);
                    layers.next();
                    continue;
                }
            }
            value = if with_states {
                keep_states(
                    layer.as_layer().forward_with_states(value)?,
                    name,
                    &mut states,
                )
            } else {
                layer.as_layer().forward_value(value)?
            };
        }
        Ok((value, states))
    }

    /// Forgets the carried states of every stateful layer.
    pub fn reset_states(&self) {
        self.layers.iter().for_each(|l| l.as_layer().reset_states());
    }

    /// A table: layer, output shape, parameters, whether a mask arrives and leaves.
    ///
    /// # Errors
    /// As [`Sequential::check`].
    pub fn summary(&self, input: Spec) -> Result<String> {
        let rows = self.check(input)?;
        let rows: Vec<(SpecRow, &str, u128)> = rows
            .into_iter()
            .zip(&self.layers)
            .map(|(row, layer)| {
                let layer = layer.as_layer();
                (row, layer.type_name(), layer.num_params() as u128)
            })
            .collect();
        Ok(summary_table(&rows))
    }

    /// Every weight as `"{layer}/{weight}"`, in layer order.
    pub fn weights(&self) -> Vec<NamedWeight> {
        self.named()
            .flat_map(|(name, layer)| layer.weights().into_iter().map(move |w| w.prefixed(name)))
            .collect()
    }

    /// Replaces every weight; each layer takes the weights under its name.
    ///
    /// # Errors
    /// A missing weight, a shape mismatch (both shapes named), or a weight that no layer takes.
    pub fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        for w in weights {
            let owner = w.name.split('/').next().unwrap_or_default();
            if !self.names.iter().any(|n| n == owner) {
                return Err(Error::Weight {
                    name: w.name.clone(),
                    message: format!("no layer is named {owner}"),
                });
            }
        }
        for (name, layer) in self.names.iter().zip(&mut self.layers) {
            layer
                .as_layer_mut()
                .set_weights(&strip_prefix(weights, name))?;
        }
        Ok(())
    }

    /// Saves the weights to a safetensors file, atomically.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        let metadata = HashMap::from([
            ("format".to_string(), "padless".to_string()),
            (
                "padless_version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            ("layers".to_string(), self.names.join(",")),
        ]);
        save_safetensors(path, &self.weights(), &metadata)
    }

    /// Loads weights saved by [`Sequential::save_weights`] (or written in the same layout).
    ///
    /// # Errors
    /// A missing, truncated or mismatched file, naming what differs.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let (weights, _) = load_safetensors(path)?;
        self.set_weights(&weights).map_err(|e| Error::WeightFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// The output's value, its states (if any) appended to `states` under `layer`.
fn keep_states(output: LayerOutput, layer: &str, states: &mut Vec<LayerStates>) -> Value {
    if let Some(kept) = output.states {
        states.push(LayerStates {
            layer: layer.to_string(),
            states: kept,
        });
    }
    output.value
}

/// Names layers of the given types as Keras does: the type in snake case, then `_1`, `_2`
/// for later layers of the same type (`lstm`, `lstm_1`).
pub(crate) fn layer_names<'a>(types: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    types
        .into_iter()
        .map(|type_name| {
            let base = snake_case(type_name);
            let count = counts.entry(base.clone()).or_insert(0);
            let name = if *count == 0 {
                base.clone()
            } else {
                format!("{base}_{count}")
            };
            *count += 1;
            name
        })
        .collect()
}

/// The summary table of a stack: one row per layer (its spec row, type name and
/// parameters): name and type, output shape, parameters, whether a mask arrives and leaves,
/// then the total.
pub(crate) fn summary_table(rows: &[(SpecRow, &str, u128)]) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut lines = vec![(
        "Layer (type)".to_string(),
        "Output shape".to_string(),
        "Params".to_string(),
        "Mask in".to_string(),
        "Mask out".to_string(),
    )];
    let mut total = 0u128;
    for (row, type_name, params) in rows {
        total = total.saturating_add(*params);
        lines.push((
            format!("{} ({type_name})", row.name),
            row.output.shape_string(),
            params.to_string(),
            yes_no(row.input.masked()).to_string(),
            yes_no(row.output.masked()).to_string(),
        ));
    }
    let width = |f: fn(&(String, String, String, String, String)) -> &String| {
        lines.iter().map(|l| f(l).len()).max().unwrap_or(0)
    };
    let widths = [
        width(|l| &l.0),
        width(|l| &l.1),
        width(|l| &l.2),
        width(|l| &l.3),
    ];
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        out.push_str(&format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {}\n",
            l.0,
            l.1,
            l.2,
            l.3,
            l.4,
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        ));
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 8 + 8));
            out.push('\n');
        }
    }
    out.push_str(&format!("Total params: {total}\n"));
    out
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, ch) in name.char_indices() {
        if ch.is_uppercase() && i > 0 && !name[..i].ends_with(|c: char| c.is_ascii_digit()) {
            out.push('_');
        }
        out.extend(ch.to_lowercase());
    }
    out
}
