//! [`Sequential`]: a stack of layers, checked for shapes and dropped masks, with a summary and
//! weight files.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::layer::{Layer, Spec, SpecRow, check_stack};
use crate::layers::{
    Activation, Dense, DropMask, Dropout, Embedding, GlobalAveragePooling1D, GlobalMaxPooling1D,
    LayerNormalization, Masking, RepeatVector, TimeDistributed,
};
use crate::rnn::{
    Bidirectional, Cell, Gru, GruCell, Lstm, LstmCell, Recurrent, SimpleRnn, SimpleRnnCell,
};
use crate::value::Value;
use crate::weights::{NamedWeight, load_safetensors, save_safetensors, strip_prefix};

/// Any layer that can stand in a [`Sequential`] stack.
#[derive(Module, Debug)]
#[allow(missing_docs)]
pub enum AnyLayer {
    Masking(Masking),
    Embedding(Embedding),
    Dense(Dense),
    TimeDistributed(TimeDistributed),
    RepeatVector(RepeatVector),
    Dropout(Dropout),
    Activation(Activation),
    LayerNormalization(LayerNormalization),
    GlobalAveragePooling1D(GlobalAveragePooling1D),
    GlobalMaxPooling1D(GlobalMaxPooling1D),
    DropMask(DropMask),
    SimpleRnn(SimpleRnn),
    Lstm(Lstm),
    Gru(Gru),
    BidirectionalSimpleRnn(Bidirectional<SimpleRnnCell>),
    BidirectionalLstm(Bidirectional<LstmCell>),
    BidirectionalGru(Bidirectional<GruCell>),
}

macro_rules! each_layer {
    ($value:expr, $layer:ident => $body:expr) => {
        match $value {
            AnyLayer::Masking($layer) => $body,
            AnyLayer::Embedding($layer) => $body,
            AnyLayer::Dense($layer) => $body,
            AnyLayer::TimeDistributed($layer) => $body,
            AnyLayer::RepeatVector($layer) => $body,
            AnyLayer::Dropout($layer) => $body,
            AnyLayer::Activation($layer) => $body,
            AnyLayer::LayerNormalization($layer) => $body,
            AnyLayer::GlobalAveragePooling1D($layer) => $body,
            AnyLayer::GlobalMaxPooling1D($layer) => $body,
            AnyLayer::DropMask($layer) => $body,
            AnyLayer::SimpleRnn($layer) => $body,
            AnyLayer::Lstm($layer) => $body,
            AnyLayer::Gru($layer) => $body,
            AnyLayer::BidirectionalSimpleRnn($layer) => $body,
            AnyLayer::BidirectionalLstm($layer) => $body,
            AnyLayer::BidirectionalGru($layer) => $body,
        }
    };
}

impl AnyLayer {
    /// The layer behind the [`Layer`] trait.
    pub fn as_layer(&self) -> &dyn Layer {
        each_layer!(self, layer => layer)
    }

    /// The layer behind the [`Layer`] trait, mutable.
    pub fn as_layer_mut(&mut self) -> &mut dyn Layer {
        each_layer!(self, layer => layer)
    }

    /// Forgets carried states (stateful recurrent layers); other layers ignore it.
    pub fn reset_states(&self) {
        match self {
            AnyLayer::SimpleRnn(l) => l.reset_states(),
            AnyLayer::Lstm(l) => l.reset_states(),
            AnyLayer::Gru(l) => l.reset_states(),
            AnyLayer::BidirectionalSimpleRnn(l) => l.reset_states(),
            AnyLayer::BidirectionalLstm(l) => l.reset_states(),
            AnyLayer::BidirectionalGru(l) => l.reset_states(),
            _ => {}
        }
    }

    /// For a recurrent layer, its output on `vector` repeated over `n_steps` steps (what
    /// follows a `RepeatVector`), through [`Recurrent::forward_repeated`]; `None` for other
    /// layers. With `prefix`, a layer that returns sequences and reads its steps in order
    /// (not stateful, not `go_backwards`) computes only the first `prefix[b]` steps of row `b`
    /// ([`Recurrent::forward_repeated_prefix`]).
    fn forward_repeated(
        &self,
        vector: Tensor<2>,
        n_steps: usize,
        prefix: Option<&[usize]>,
    ) -> Option<Result<Value>> {
        fn value<C: Cell>(
            layer: &Recurrent<C>,
            vector: Tensor<2>,
            n: usize,
            prefix: Option<&[usize]>,
        ) -> Result<Value> {
            layer.repeated_value(vector, n, prefix)
        }
        match self {
            AnyLayer::SimpleRnn(l) => Some(value(l, vector, n_steps, prefix)),
            AnyLayer::Lstm(l) => Some(value(l, vector, n_steps, prefix)),
            AnyLayer::Gru(l) => Some(value(l, vector, n_steps, prefix)),
            _ => None,
        }
    }

    /// Whether each output step depends only on the same input step (so outputs at steps
    /// nobody reads can be skipped upstream).
    fn is_per_step(&self) -> bool {
        matches!(
            self,
            AnyLayer::Dense(_)
                | AnyLayer::TimeDistributed(_)
                | AnyLayer::Dropout(_)
                | AnyLayer::Activation(_)
                | AnyLayer::LayerNormalization(_)
        )
    }
}

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
}

impl Sequential {
    /// A stack of `layers`.
    pub fn new(layers: Vec<AnyLayer>) -> Self {
        let mut counts: HashMap<String, usize> = HashMap::new();
        let names = layers
            .iter()
            .map(|layer| {
                let base = snake_case(layer.as_layer().type_name());
                let count = counts.entry(base.clone()).or_insert(0);
                let name = if *count == 0 {
                    base.clone()
                } else {
                    format!("{base}_{count}")
                };
                *count += 1;
                name
            })
            .collect();
        Sequential { layers, names }
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
    /// only by per-step layers (Dense, TimeDistributed, Dropout, Activation,
    /// LayerNormalization) then computes only those steps, which the causal recurrence makes
    /// exact: the outputs at the read steps, and so the loss and every gradient, equal
    /// [`Sequential::forward`]'s; outputs at the other steps differ from the full run's. The
    /// Trainer calls this with the batch's target mask. Any other stack runs as
    /// [`Sequential::forward`].
    ///
    /// # Errors
    /// The first layer's error.
    pub fn forward_reading(&self, input: Value, read_steps: Option<&[usize]>) -> Result<Value> {
        let mut value = input;
        let mut layers = self.layers.iter().enumerate().peekable();
        while let Some((i, layer)) = layers.next() {
            // A recurrent layer fed by RepeatVector sees the same input at every step: it runs
            // on the vector itself (same result, one input projection per row).
            if let (AnyLayer::RepeatVector(repeat), Value::Vector(vector)) = (layer, &value)
                && let Some(&(_, next)) = layers.peek()
            {
                let rows = vector.dims()[0];
                let prefix = read_steps.filter(|steps| {
                    steps.len() == rows
                        && steps.iter().all(|&s| s <= repeat.n_steps)
                        && self.layers[i + 2..].iter().all(AnyLayer::is_per_step)
                });
                if let Some(out) = next.forward_repeated(vector.clone(), repeat.n_steps, prefix) {
                    value = out?;
                    layers.next();
                    continue;
                }
            }
            value = layer.as_layer().forward_value(value)?;
        }
        Ok(value)
    }

    /// Forgets the carried states of every stateful layer.
    pub fn reset_states(&self) {
        self.layers.iter().for_each(AnyLayer::reset_states);
    }

    /// A table: layer, output shape, parameters, whether a mask arrives and leaves.
    ///
    /// # Errors
    /// As [`Sequential::check`].
    pub fn summary(&self, input: Spec) -> Result<String> {
        let rows = self.check(input)?;
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let mut lines = vec![(
            "Layer (type)".to_string(),
            "Output shape".to_string(),
            "Params".to_string(),
            "Mask in".to_string(),
            "Mask out".to_string(),
        )];
        let mut total = 0;
        for (row, layer) in rows.iter().zip(&self.layers) {
            let params = layer.as_layer().num_params();
            total += params;
            lines.push((
                format!("{} ({})", row.name, layer.as_layer().type_name()),
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
        Ok(out)
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
