//! The Transformer layers and model against PyTorch in float64
//! (`fixtures/make_transformer_reference.py`): values to 1e-9 and gradients w.r.t. inputs
//! and every weight; the attention kernel against the same reference; finite differences
//! of the kernel's and a layer's gradients.
//!
//! This binary configures the flex device for f64 once, before any tensor is made.

use std::sync::OnceLock;

use burn::module::Module;
use burn::tensor::{Gradients, Int, Tensor, TensorData};
use padless::Mask;
use padless::layers::ActivationKind;
use padless::seq2seq::AttentionMasks;
use padless::transformer::{
    Transformer, TransformerAttention, TransformerConfig, TransformerLayerConfig,
};
use padless::weights::NamedWeight;
use padless_kernels::attention::{
    AttentionConfig, PackedQkv, attention_backward, attention_forward,
};
use serde_json::Value as Json;

mod common;
mod transformer_common;
use common::{device, f64s, tensor};
use transformer_common::gradients_by_name;

fn fixture() -> &'static Json {
    static FIXTURE: OnceLock<Json> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        serde_json::from_str(include_str!("fixtures/transformer_reference.json")).unwrap()
    })
}

fn floats(v: &Json) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("an array, found {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn usizes(v: &Json) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn size(case: &Json, key: &str) -> usize {
    case[key].as_u64().unwrap_or_else(|| panic!("{key}")) as usize
}

fn mask(case: &Json, key: &str, batch: usize, time: usize) -> Mask {
    let bools: Vec<bool> = usizes(&case[key]).iter().map(|&v| v == 1).collect();
    Mask::from_bools(&bools, batch, time, &device()).unwrap()
}

/// The fixture's weights (float32 values, so loading them as `f32` is exact).
fn named_weights(case: &Json) -> Vec<NamedWeight> {
    case["weights"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, w)| NamedWeight {
            name: name.clone(),
            shape: usizes(&w["shape"]),
            values: floats(&w["values"]).iter().map(|&v| v as f32).collect(),
        })
        .collect()
}

/// Asserts `|got - want| <= tolerance * max(1, |want|)` element by element.
fn assert_close(got: &[f64], want: &[f64], tolerance: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance * w.abs().max(1.0),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// Compares every weight gradient of `module` with the fixture's, by PyTorch name.
fn assert_weight_grads<M: Module>(module: &M, grads: &Gradients, case: &Json, what: &str) {
    let got = gradients_by_name(module, grads);
    let want = case["d_weights"].as_object().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: weight count");
    for (name, values) in want {
        let ours = got
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no weight {name}"));
        assert_close(ours, &floats(values), 1e-9, &format!("{what}: d {name}"));
    }
}

/// `sum(y * g)`, the fixtures' loss (their `g` is only read at valid steps; ours are 0 at
/// masked steps).
fn weighted_sum(y: Tensor<3>, g: &[f64]) -> Tensor<1> {
    let dims = y.dims();
    (y * tensor(g, dims)).sum()
}

fn activation(case: &Json) -> ActivationKind {
    match case["activation"].as_str().unwrap() {
        "relu" => ActivationKind::Relu,
        "gelu" => ActivationKind::Gelu,
        other => panic!("activation {other}"),
    }
}

fn layer_config(case: &Json) -> TransformerLayerConfig {
    TransformerLayerConfig::new(size(case, "d_model"), size(case, "heads"))
        .with_d_ff(size(case, "d_ff"))
        .with_dropout(0.0)
        .with_activation(activation(case))
        .with_norm_first(case["norm_first"].as_bool().unwrap())
}

#[test]
fn multi_head_attention_matches_pytorch() {
    for case in fixture()["attention"].as_array().unwrap() {
        let what = case["name"].as_str().unwrap();
        let (d, heads) = (size(case, "d_model"), size(case, "heads"));
        let (b, tq, tk) = (
            size(case, "batch"),
            size(case, "t_query"),
            size(case, "t_key"),
        );
        let mut attention = TransformerAttention::new(d, heads, 0.0, &device()).unwrap();
        attention.set_weights(&named_weights(case)).unwrap();
        let query = tensor(&floats(&case["query"]), [b, tq, d]).require_grad();
        let query_mask = mask(case, "query_mask", b, tq);
        let key_mask = mask(case, "key_mask", b, tk);
        let causal = case["causal"].as_bool().unwrap();
        let (out, keys) = if case["cross"].as_bool().unwrap() {
            let keys = tensor(&floats(&case["keys"]), [b, tk, d]).require_grad();
            let masks = AttentionMasks {
                query: Some(&query_mask),
                keys: Some(&key_mask),
                causal,
            };
            let out = attention
                .forward(query.clone(), keys.clone(), masks)
                .unwrap();
            (out, Some(keys))
        } else {
            let out = attention
                .forward_self(query.clone(), Some(&query_mask), causal)
                .unwrap();
            (out, None)
        };
        assert_close(
            &f64s(out.clone()),
            &floats(&case["output"]),
            1e-9,
            &format!("{what}: output"),
        );
        let grads = weighted_sum(out, &floats(&case["grad_output"])).backward();
        assert_close(
            &f64s(query.grad(&grads).unwrap()),
            &floats(&case["d_query"]),
            1e-9,
            &format!("{what}: d_query"),
        );
        if let Some(keys) = keys {
            assert_close(
                &f64s(keys.grad(&grads).unwrap()),
                &floats(&case["d_keys"]),
                1e-9,
                &format!("{what}: d_keys"),
            );
        }
        assert_weight_grads(&attention, &grads, case, what);
    }
}

#[test]
fn the_attention_kernel_matches_the_same_pytorch_reference() {
    for case in fixture()["attention"].as_array().unwrap() {
        let what = case["name"].as_str().unwrap();
        let p = &case["packed"];
        let heads = size(case, "heads");
        let config = AttentionConfig::new(heads, size(case, "d_model") / heads)
            .with_causal(case["causal"].as_bool().unwrap());
        let (q, k, v) = (floats(&p["q"]), floats(&p["k"]), floats(&p["v"]));
        let (cu_q, cu_k) = (usizes(&p["cu_q"]), usizes(&p["cu_k"]));
        let inputs = PackedQkv::new(&q, &k, &v, &cu_q, &cu_k);
        for threads in [1, 2] {
            let config = config.with_threads(threads);
            let forward = attention_forward(&config, &inputs);
            assert_close(&forward.out, &floats(&p["context"]), 1e-12, what);
            assert_close(&forward.lse, &floats(&p["lse"]), 1e-12, what);
            let grads = attention_backward(&config, &inputs, &forward, &floats(&p["grad_context"]));
            assert_close(
                &grads.d_q,
                &floats(&p["d_q"]),
                1e-12,
                &format!("{what}: d_q"),
            );
            assert_close(
                &grads.d_k,
                &floats(&p["d_k"]),
                1e-12,
                &format!("{what}: d_k"),
            );
            assert_close(
                &grads.d_v,
                &floats(&p["d_v"]),
                1e-12,
                &format!("{what}: d_v"),
            );
        }
    }
}

#[test]
fn encoder_layers_match_pytorch() {
    for case in fixture()["encoder_layers"].as_array().unwrap() {
        let what = format!(
            "encoder layer norm_first {} {}",
            case["norm_first"], case["activation"]
        );
        let (b, t, d) = (
            size(case, "batch"),
            size(case, "time"),
            size(case, "d_model"),
        );
        let mut layer = layer_config(case).init_encoder_layer(&device()).unwrap();
        layer.set_weights(&named_weights(case)).unwrap();
        let x = tensor(&floats(&case["x"]), [b, t, d]).require_grad();
        let m = mask(case, "mask", b, t);
        let y = layer.forward(x.clone(), Some(&m)).unwrap();
        assert_close(&f64s(y.clone()), &floats(&case["output"]), 1e-9, &what);
        let grads = weighted_sum(y, &floats(&case["grad_output"])).backward();
        assert_close(
            &f64s(x.grad(&grads).unwrap()),
            &floats(&case["d_x"]),
            1e-9,
            &format!("{what}: d_x"),
        );
        assert_weight_grads(&layer, &grads, case, &what);
    }
}

#[test]
fn decoder_layers_match_pytorch() {
    for case in fixture()["decoder_layers"].as_array().unwrap() {
        let what = format!(
            "decoder layer norm_first {} {}",
            case["norm_first"], case["activation"]
        );
        let (b, t, d) = (
            size(case, "batch"),
            size(case, "time"),
            size(case, "d_model"),
        );
        let tm = size(case, "memory_time");
        let mut layer = layer_config(case).init_decoder_layer(&device()).unwrap();
        layer.set_weights(&named_weights(case)).unwrap();
        let x = tensor(&floats(&case["x"]), [b, t, d]).require_grad();
        let memory = tensor(&floats(&case["memory"]), [b, tm, d]).require_grad();
        let target_mask = mask(case, "target_mask", b, t);
        let memory_mask = mask(case, "memory_mask", b, tm);
        let y = layer
            .forward(
                x.clone(),
                Some(&target_mask),
                memory.clone(),
                Some(&memory_mask),
            )
            .unwrap();
        assert_close(&f64s(y.clone()), &floats(&case["output"]), 1e-9, &what);
        let grads = weighted_sum(y, &floats(&case["grad_output"])).backward();
        assert_close(
            &f64s(x.grad(&grads).unwrap()),
            &floats(&case["d_x"]),
            1e-9,
            &format!("{what}: d_x"),
        );
        assert_close(
            &f64s(memory.grad(&grads).unwrap()),
            &floats(&case["d_memory"]),
            1e-9,
            &format!("{what}: d_memory"),
        );
        assert_weight_grads(&layer, &grads, case, &what);
    }
}

/// How a batch of id rows is padded: each row's tokens at the given steps of `time`.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Tokens first, then padding to the longest row.
    Post,
    /// Padding first, `extra` more steps than the longest row.
    Pre { extra: usize },
    /// A padded step after every token, then padding.
    Holes,
}

impl Layout {
    /// The steps of a row of `n` tokens in a batch whose longest row has `longest`, and the
    /// batch's time.
    fn steps(self, n: usize, longest: usize) -> (Vec<usize>, usize) {
        match self {
            Layout::Post => ((0..n).collect(), longest),
            Layout::Pre { extra } => {
                let time = longest + extra;
                ((time - n..time).collect(), time)
            }
            Layout::Holes => ((0..n).map(|i| 2 * i).collect(), 2 * longest),
        }
    }

    /// The rows padded with 0 as `[rows, time]`, and each row's steps.
    fn pad(self, rows: &[Vec<i64>]) -> (Tensor<2, Int>, Vec<Vec<usize>>) {
        let longest = rows.iter().map(Vec::len).max().unwrap();
        let time = self.steps(longest, longest).1;
        let mut ids = vec![0i64; rows.len() * time];
        let mut placed = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            let (steps, _) = self.steps(row.len(), longest);
            for (&step, &id) in steps.iter().zip(row) {
                ids[r * time + step] = id;
            }
            placed.push(steps);
        }
        let data = TensorData::new(ids, [rows.len(), time]);
        (Tensor::from_data(data, &device()), placed)
    }
}

#[test]
fn models_match_pytorch_in_any_padding() {
    for case in fixture()["models"].as_array().unwrap() {
        let config: TransformerConfig = serde_json::from_value(case["config"].clone()).unwrap();
        let mut model = config.init(&device()).unwrap();
        model.set_weights(&named_weights(case)).unwrap();
        let rows = case["rows"].as_array().unwrap();
        let ids = |key: &str| -> Vec<Vec<i64>> {
            rows.iter()
                .map(|r| {
                    r[key]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_i64().unwrap())
                        .collect()
                })
                .collect()
        };
        let (sources, targets) = (ids("source"), ids("decoder_input"));
        let v = config.n_target_tokens;
        for (source_layout, target_layout) in [
            (Layout::Post, Layout::Post),
            (Layout::Pre { extra: 2 }, Layout::Post),
            (Layout::Holes, Layout::Pre { extra: 1 }),
            (Layout::Post, Layout::Holes),
        ] {
            let what = format!(
                "model {:?} {:?}, source {source_layout:?}, target {target_layout:?}",
                config.activation, config.positions
            );
            let (source, _) = source_layout.pad(&sources);
            let (decoder_input, placed) = target_layout.pad(&targets);
            let time = decoder_input.dims()[1];
            let (logits, out_mask) = run(&model, source, decoder_input.clone());
            assert_eq!(
                out_mask.unwrap().to_vec(),
                Mask::from_padding_id(&decoder_input, 0).to_vec(),
                "{what}: the output mask is the target mask"
            );
            let got = f64s(logits.clone());
            // The reference logits at each row's steps, zeros elsewhere; the loss weights
            // likewise.
            let mut want = vec![0.0; got.len()];
            let mut g = vec![0.0; got.len()];
            for (r, (row, steps)) in rows.iter().zip(&placed).enumerate() {
                let (logits, grad) = (floats(&row["logits"]), floats(&row["grad_logits"]));
                for (i, &step) in steps.iter().enumerate() {
                    let at = (r * time + step) * v;
                    want[at..at + v].copy_from_slice(&logits[i * v..(i + 1) * v]);
                    g[at..at + v].copy_from_slice(&grad[i * v..(i + 1) * v]);
                }
            }
            assert_close(&got, &want, 1e-9, &format!("{what}: logits"));
            let grads = weighted_sum(logits, &g).backward();
            assert_weight_grads(&model, &grads, case, &what);
        }
    }
}

fn run(
    model: &Transformer,
    source: Tensor<2, Int>,
    decoder_input: Tensor<2, Int>,
) -> (Tensor<3>, Option<Mask>) {
    model.forward(source, decoder_input).unwrap()
}

#[test]
fn an_encoder_layer_gradient_matches_finite_differences() {
    // Pre-norm GELU, a pre-padded row and a row with a hole: the input gradient and one
    // weight's gradient against central differences of the loss.
    let config = TransformerLayerConfig::new(4, 2)
        .with_d_ff(6)
        .with_dropout(0.0)
        .with_activation(ActivationKind::Gelu)
        .with_norm_first(true);
    let layer = config.init_encoder_layer(&device()).unwrap();
    let (b, t, d) = (2, 4, 4);
    let m = Mask::from_bools(
        &[false, true, true, true, true, false, true, true],
        b,
        t,
        &device(),
    )
    .unwrap();
    let x0 = common::values(b * t * d, 5, 1.0)
        .iter()
        .map(|&v| v as f64)
        .collect::<Vec<_>>();
    let g = common::values(b * t * d, 6, 1.0)
        .iter()
        .map(|&v| v as f64)
        .collect::<Vec<_>>();
    let loss = |layer: &padless::transformer::TransformerEncoderLayer, x: &[f64]| -> f64 {
        let y = layer.forward(tensor(x, [b, t, d]), Some(&m)).unwrap();
        f64s(weighted_sum(y, &g))[0]
    };
    let x = tensor(&x0, [b, t, d]).require_grad();
    let grads = weighted_sum(layer.forward(x.clone(), Some(&m)).unwrap(), &g).backward();
    let d_x = f64s(x.grad(&grads).unwrap());
    let eps = 1e-6;
    for i in 0..x0.len() {
        let nudged = |delta: f64| {
            let mut x = x0.clone();
            x[i] += delta;
            loss(&layer, &x)
        };
        let numeric = (nudged(eps) - nudged(-eps)) / (2.0 * eps);
        assert!(
            (numeric - d_x[i]).abs() <= 1e-6 * numeric.abs().max(1.0),
            "d_x[{i}]: finite difference {numeric}, autodiff {}",
            d_x[i]
        );
    }
    // The first linear layer's weight, through the weight list.
    let d_w = gradients_by_name(&layer, &grads)["linear1.weight"].clone();
    let weights = layer.weights();
    for (i, &analytic) in d_w.iter().enumerate() {
        // Weights are loaded as f32: the step is the difference of the two rounded values.
        let nudged = |delta: f32| {
            let mut nudged = weights.clone();
            let w = nudged
                .iter_mut()
                .find(|w| w.name == "linear1.weight")
                .unwrap();
            w.values[i] += delta;
            let value = w.values[i] as f64;
            let mut other = config.init_encoder_layer(&device()).unwrap();
            other.set_weights(&nudged).unwrap();
            (loss(&other, &x0), value)
        };
        let ((up, high), (down, low)) = (nudged(1e-3), nudged(-1e-3));
        let numeric = (up - down) / (high - low);
        assert!(
            (numeric - analytic).abs() <= 1e-5 * numeric.abs().max(1.0),
            "d linear1.weight[{i}]: finite difference {numeric}, autodiff {analytic}"
        );
    }
}
