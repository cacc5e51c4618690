//! The variable-length attention kernel against a naive float64 reference (the dense softmax
//! of each row and head, with the causal mask written out), and its gradients against the
//! reference's and against finite differences; f32 against f64; one thread against two.

use padless_kernels::attention::{
    AttentionConfig, AttentionDropout, AttentionOutput, PackedQkv, attention_backward,
    attention_forward,
};

/// A deterministic generator (xorshift), so a failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `n` values uniform in [-scale, scale).
    fn values(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n)
            .map(|_| ((self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale)
            .collect()
    }
}

/// One call's inputs in f64, with the output gradient.
#[derive(Debug, Clone)]
struct Case {
    config: AttentionConfig,
    cu_q: Vec<usize>,
    cu_k: Vec<usize>,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    d_out: Vec<f64>,
}

impl Case {
    /// Random values for rows of `lengths` `(n_q, n_k)`.
    fn new(config: AttentionConfig, lengths: &[(usize, usize)], seed: u64) -> Case {
        let mut rng = Rng(seed | 1);
        let mut cu_q = vec![0];
        let mut cu_k = vec![0];
        for &(n_q, n_k) in lengths {
            cu_q.push(cu_q.last().unwrap() + n_q);
            cu_k.push(cu_k.last().unwrap() + n_k);
        }
        let width = config.heads * config.d_head;
        let (n_q, n_k) = (*cu_q.last().unwrap(), *cu_k.last().unwrap());
        Case {
            config,
            q: rng.values(n_q * width, 1.5),
            k: rng.values(n_k * width, 1.5),
            v: rng.values(n_k * width, 1.0),
            d_out: rng.values(n_q * width, 1.0),
            cu_q,
            cu_k,
        }
    }

    /// Random shapes: 1 to 5 rows, lengths 0 to `max_len` (0 and 1 often), self-attention
    /// (equal lengths) when causal or on a coin flip, else independent key lengths.
    fn random(seed: u64, max_len: usize) -> Case {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut pick = |n: usize| (rng.next() % n as u64) as usize;
        let heads = 1 + pick(3);
        let d_head = [1, 3, 8, 16, 33, 40][pick(6)];
        let causal = pick(2) == 0;
        let same = causal || pick(2) == 0;
        let batch = 1 + pick(5);
        let length = |pick: &mut dyn FnMut(usize) -> usize| match pick(4) {
            0 => 0,
            1 => 1,
            _ => pick(max_len + 1),
        };
        let lengths: Vec<(usize, usize)> = (0..batch)
            .map(|_| {
                let n_q = length(&mut pick);
                let n_k = if same { n_q } else { length(&mut pick) };
                (n_q, n_k)
            })
            .collect();
        let config = AttentionConfig::new(heads, d_head).with_causal(causal);
        Case::new(config, &lengths, seed)
    }

    fn packed<'a, T>(&'a self, q: &'a [T], k: &'a [T], v: &'a [T]) -> PackedQkv<'a, T> {
        PackedQkv::new(q, k, v, &self.cu_q, &self.cu_k)
    }

    fn forward(&self, config: &AttentionConfig) -> AttentionOutput<f64> {
        attention_forward(config, &self.packed(&self.q, &self.k, &self.v))
    }

    fn backward(
        &self,
        config: &AttentionConfig,
    ) -> (
        AttentionOutput<f64>,
        padless_kernels::AttentionGradients<f64>,
    ) {
        let inputs = self.packed(&self.q, &self.k, &self.v);
        let forward = attention_forward(config, &inputs);
        let grads = attention_backward(config, &inputs, &forward, &self.d_out);
        (forward, grads)
    }
}

/// The naive reference: for each row and head the full score matrix, a two-pass softmax over
/// the keys each query sees, the output, the log-sum-exp, and the gradients from the dense
/// formulas (`dS = P ⊙ (dP - Σ_j P dP)`); with dropout, each weight times its factor `m`
/// (`1 / (1 - rate)` where [`AttentionDropout::keeps`] it, else 0) in the output and `dV`, and
/// `dP = m (dO · v)`.
struct Reference {
    out: Vec<f64>,
    lse: Vec<f64>,
    d_q: Vec<f64>,
    d_k: Vec<f64>,
    d_v: Vec<f64>,
}

fn reference(case: &Case) -> Reference {
    let AttentionConfig {
        heads,
        d_head: d,
        causal,
        scale,
        dropout,
        ..
    } = case.config;
    let width = heads * d;
    let (n_q, n_k) = (*case.cu_q.last().unwrap(), *case.cu_k.last().unwrap());
    let mut r = Reference {
        out: vec![0.0; n_q * width],
        lse: vec![f64::NEG_INFINITY; n_q * heads],
        d_q: vec![0.0; n_q * width],
        d_k: vec![0.0; n_k * width],
        d_v: vec![0.0; n_k * width],
    };
    let at = |token: usize, h: usize, c: usize| token * width + h * d + c;
    for b in 0..case.cu_q.len() - 1 {
        let (q0, q1, k0, k1) = (
            case.cu_q[b],
            case.cu_q[b + 1],
            case.cu_k[b],
            case.cu_k[b + 1],
        );
        for h in 0..heads {
            for i in q0..q1 {
                let sees = |j: usize| !causal || j - k0 <= i - q0;
                let keys: Vec<usize> = (k0..k1).filter(|&j| sees(j)).collect();
                if keys.is_empty() {
                    continue;
                }
                let s: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        scale
                            * (0..d)
                                .map(|c| case.q[at(i, h, c)] * case.k[at(j, h, c)])
                                .sum::<f64>()
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = s.iter().map(|x| (x - max).exp()).sum();
                let p: Vec<f64> = s.iter().map(|x| (x - max).exp() / total).collect();
                r.lse[i * heads + h] = max + total.ln();
                let m: Vec<f64> = keys
                    .iter()
                    .map(|&j| match dropout {
                        Some(drop) if drop.keeps(h, i, j) => 1.0 / (1.0 - drop.rate),
                        Some(_) => 0.0,
                        None => 1.0,
                    })
                    .collect();
                for ((&j, &pj), &mj) in keys.iter().zip(&p).zip(&m) {
                    for c in 0..d {
                        r.out[at(i, h, c)] += pj * mj * case.v[at(j, h, c)];
                        r.d_v[at(j, h, c)] += pj * mj * case.d_out[at(i, h, c)];
                    }
                }
                let d_p: Vec<f64> = keys
                    .iter()
                    .zip(&m)
                    .map(|(&j, &mj)| {
                        mj * (0..d)
                            .map(|c| case.d_out[at(i, h, c)] * case.v[at(j, h, c)])
                            .sum::<f64>()
                    })
                    .collect();
                let mean: f64 = p.iter().zip(&d_p).map(|(a, b)| a * b).sum();
                for ((&j, &pj), &dpj) in keys.iter().zip(&p).zip(&d_p) {
                    let d_s = pj * (dpj - mean);
                    for c in 0..d {
                        r.d_q[at(i, h, c)] += scale * d_s * case.k[at(j, h, c)];
                        r.d_k[at(j, h, c)] += scale * d_s * case.q[at(i, h, c)];
                    }
                }
            }
        }
    }
    r
}

/// Asserts `|got - want| <= tolerance * max(1, |want|)` element by element.
fn assert_close(got: &[f64], want: &[f64], tolerance: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= tolerance * w.abs().max(1.0)
        };
        assert!(ok, "{what}[{i}]: got {g}, want {w}");
    }
}

fn describe(case: &Case) -> String {
    format!(
        "heads {}, d_head {}, causal {}, cu_q {:?}, cu_k {:?}",
        case.config.heads, case.config.d_head, case.config.causal, case.cu_q, case.cu_k
    )
}

#[test]
fn forward_and_gradients_match_the_dense_reference_on_random_shapes() {
    for seed in 0..60 {
        // Lengths up to 150 take several blocks of 64 queries and keys.
        let case = Case::random(seed, if seed % 4 == 0 { 150 } else { 20 });
        let what = describe(&case);
        let want = reference(&case);
        let (forward, grads) = case.backward(&case.config);
        assert_close(&forward.out, &want.out, 1e-12, &format!("out ({what})"));
        assert_close(&forward.lse, &want.lse, 1e-12, &format!("lse ({what})"));
        assert_close(&grads.d_q, &want.d_q, 1e-11, &format!("d_q ({what})"));
        assert_close(&grads.d_k, &want.d_k, 1e-11, &format!("d_k ({what})"));
        assert_close(&grads.d_v, &want.d_v, 1e-11, &format!("d_v ({what})"));
    }
}

#[test]
fn gradients_match_finite_differences() {
    for (causal, lengths) in [
        (false, vec![(3, 4), (0, 2), (2, 0), (1, 1)]),
        (true, vec![(5, 5), (1, 1), (0, 0), (3, 3)]),
        (true, vec![(2, 4), (4, 2)]),
    ] {
        let config = AttentionConfig::new(2, 3).with_causal(causal);
        let case = Case::new(config, &lengths, 11);
        let (_, grads) = case.backward(&config);
        // The loss Σ out ⊙ d_out, whose gradient backward computes.
        let loss = |c: &Case| -> f64 {
            c.forward(&config)
                .out
                .iter()
                .zip(&c.d_out)
                .map(|(o, g)| o * g)
                .sum()
        };
        let eps = 1e-6;
        for (which, analytic) in [(0, &grads.d_q), (1, &grads.d_k), (2, &grads.d_v)] {
            for i in 0..analytic.len() {
                let nudged = |delta: f64| {
                    let mut c = case.clone();
                    [&mut c.q, &mut c.k, &mut c.v][which][i] += delta;
                    loss(&c)
                };
                let numeric = (nudged(eps) - nudged(-eps)) / (2.0 * eps);
                assert!(
                    (numeric - analytic[i]).abs() <= 1e-7 * numeric.abs().max(1.0),
                    "{} [{i}] (causal {causal}): finite difference {numeric}, backward {}",
                    ["d_q", "d_k", "d_v"][which],
                    analytic[i]
                );
            }
        }
    }
}

#[test]
fn f32_follows_the_f64_reference() {
    for seed in 100..120 {
        let case = Case::random(seed, 90);
        let what = describe(&case);
        let narrow = |x: &[f64]| -> Vec<f32> { x.iter().map(|&v| v as f32).collect() };
        let (q, k, v, d_out) = (
            narrow(&case.q),
            narrow(&case.k),
            narrow(&case.v),
            narrow(&case.d_out),
        );
        let inputs = case.packed(&q, &k, &v);
        let forward = attention_forward(&case.config, &inputs);
        let grads = attention_backward(&case.config, &inputs, &forward, &d_out);
        let want = reference(&case);
        let wide = |x: &[f32]| -> Vec<f64> { x.iter().map(|&v| v as f64).collect() };
        assert_close(
            &wide(&forward.out),
            &want.out,
            2e-5,
            &format!("out ({what})"),
        );
        assert_close(
            &wide(&forward.lse),
            &want.lse,
            2e-5,
            &format!("lse ({what})"),
        );
        assert_close(&wide(&grads.d_q), &want.d_q, 1e-4, &format!("d_q ({what})"));
        assert_close(&wide(&grads.d_k), &want.d_k, 1e-4, &format!("d_k ({what})"));
        assert_close(&wide(&grads.d_v), &want.d_v, 1e-4, &format!("d_v ({what})"));
    }
}

#[test]
fn one_and_two_threads_give_the_same_bits() {
    // Large enough for the thread pair: 24 rows of up to 100 tokens, 4 heads of 32.
    let mut rng = Rng(77);
    for causal in [false, true] {
        let lengths: Vec<(usize, usize)> = (0..24)
            .map(|_| {
                let n = (rng.next() % 101) as usize;
                (
                    n,
                    if causal {
                        n
                    } else {
                        (rng.next() % 101) as usize
                    },
                )
            })
            .collect();
        let config = AttentionConfig::new(4, 32).with_causal(causal);
        let case = Case::new(config, &lengths, 5);
        let (one_forward, one) = case.backward(&config);
        let (two_forward, two) = case.backward(&config.with_threads(2));
        assert_eq!(one_forward, two_forward, "forward, causal {causal}");
        assert_eq!(one, two, "gradients, causal {causal}");
        let want = reference(&case);
        assert_close(&two_forward.out, &want.out, 1e-12, "two-thread out");
        assert_close(&two.d_k, &want.d_k, 1e-11, "two-thread d_k");
    }
}

#[test]
fn a_row_without_keys_outputs_zeros_and_gets_zero_gradients() {
    // Row 0: 3 queries and no keys; row 1: 2 queries over 2 keys.
    let config = AttentionConfig::new(2, 4);
    let case = Case::new(config, &[(3, 0), (2, 2)], 3);
    let (forward, grads) = case.backward(&config);
    let width = 2 * 4;
    assert!(forward.out[..3 * width].iter().all(|&x| x == 0.0));
    assert!(forward.lse[..3 * 2].iter().all(|&x| x == f64::NEG_INFINITY));
    assert!(grads.d_q[..3 * width].iter().all(|&x| x == 0.0));
    assert!(forward.out.iter().chain(&grads.d_q).all(|x| x.is_finite()));
    // Row 1 is the attention of its own tokens alone.
    let alone = Case {
        cu_q: vec![0, 2],
        cu_k: vec![0, 2],
        q: case.q[3 * width..].to_vec(),
        d_out: case.d_out[3 * width..].to_vec(),
        ..case.clone()
    };
    let (alone_forward, alone_grads) = alone.backward(&config);
    assert_eq!(forward.out[3 * width..], alone_forward.out[..]);
    assert_eq!(grads.d_k, alone_grads.d_k);
}

#[test]
fn a_causal_query_ignores_later_keys() {
    // Changing the last key and value of a causal row changes only the last query's output.
    let config = AttentionConfig::new(1, 5).with_causal(true);
    let case = Case::new(config, &[(4, 4)], 9);
    let mut changed = case.clone();
    for x in &mut changed.k[3 * 5..] {
        *x += 3.0;
    }
    for x in &mut changed.v[3 * 5..] {
        *x -= 2.0;
    }
    let (a, b) = (case.forward(&config), changed.forward(&config));
    assert_eq!(a.out[..3 * 5], b.out[..3 * 5]);
    assert_ne!(a.out[3 * 5..], b.out[3 * 5..]);
}

#[test]
#[should_panic(
    expected = "attention: k must be [3, 2, 4] (24 values, tokens 8 apart), found 23 values"
)]
fn a_buffer_of_the_wrong_length_panics_naming_both() {
    let config = AttentionConfig::new(2, 4);
    let (q, k, v) = (vec![0.0f32; 16], vec![0.0f32; 23], vec![0.0f32; 24]);
    attention_forward(&config, &PackedQkv::new(&q, &k, &v, &[0, 2], &[0, 3]));
}

#[test]
#[should_panic(expected = "attention: cu_seqlens_q must not decrease, found [0, 2, 1]")]
fn decreasing_offsets_panic() {
    let config = AttentionConfig::new(1, 1);
    attention_forward(
        &config,
        &PackedQkv::new(&[0.0f64], &[0.0], &[0.0], &[0, 2, 1], &[0, 1, 1]),
    );
}

#[test]
fn dropout_matches_the_dense_reference_and_finite_differences() {
    for seed in 200..230 {
        // Lengths up to 150 take several blocks of 64 queries and keys.
        let mut case = Case::random(seed, if seed % 3 == 0 { 150 } else { 20 });
        case.config = case.config.with_dropout(0.3, seed * 7 + 1);
        let what = describe(&case);
        let want = reference(&case);
        let (forward, grads) = case.backward(&case.config);
        assert_close(&forward.out, &want.out, 1e-12, &format!("out ({what})"));
        assert_close(&forward.lse, &want.lse, 1e-12, &format!("lse ({what})"));
        assert_close(&grads.d_q, &want.d_q, 1e-11, &format!("d_q ({what})"));
        assert_close(&grads.d_k, &want.d_k, 1e-11, &format!("d_k ({what})"));
        assert_close(&grads.d_v, &want.d_v, 1e-11, &format!("d_v ({what})"));
        let (_, two) = case.backward(&case.config.with_threads(2));
        assert_eq!(grads, two, "one and two threads ({what})");
    }
    // Finite differences of Σ out ⊙ d_out with the dropped weights fixed by the seed.
    let config = AttentionConfig::new(2, 3)
        .with_causal(true)
        .with_dropout(0.4, 9);
    let case = Case::new(config, &[(5, 5), (1, 1), (3, 3)], 13);
    let plain = case.forward(&AttentionConfig::new(2, 3).with_causal(true));
    assert_ne!(
        case.forward(&config).out,
        plain.out,
        "some weight is dropped"
    );
    let (_, grads) = case.backward(&config);
    let loss = |c: &Case| -> f64 {
        let out = c.forward(&config).out;
        out.iter().zip(&c.d_out).map(|(o, g)| o * g).sum()
    };
    let eps = 1e-6;
    for (which, analytic) in [(0, &grads.d_q), (1, &grads.d_k), (2, &grads.d_v)] {
        for i in 0..analytic.len() {
            let nudged = |delta: f64| {
                let mut c = case.clone();
                [&mut c.q, &mut c.k, &mut c.v][which][i] += delta;
                loss(&c)
            };
            let numeric = (nudged(eps) - nudged(-eps)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() <= 1e-7 * numeric.abs().max(1.0),
                "{} [{i}] with dropout: finite difference {numeric}, backward {}",
                ["d_q", "d_k", "d_v"][which],
                analytic[i]
            );
        }
    }
}

#[test]
fn dropout_keeps_one_minus_rate_of_the_weights() {
    for (rate, seed) in [(0.1, 1), (0.5, 2), (0.9, 3)] {
        let drop = AttentionDropout { rate, seed };
        let mut kept = 0usize;
        let n = 4 * 300 * 300;
        for h in 0..4 {
            for q in 0..300 {
                kept += (0..300).filter(|&k| drop.keeps(h, q, k)).count();
            }
        }
        let fraction = kept as f64 / n as f64;
        // 360,000 draws: a standard deviation of at most 0.0009.
        assert!(
            (fraction - (1.0 - rate)).abs() < 0.005,
            "rate {rate}: kept {fraction}"
        );
    }
    assert!(
        (0..1000).all(|k| AttentionDropout { rate: 0.0, seed: 5 }.keeps(1, 2, k)),
        "rate 0 keeps everything"
    );
}

/// Queries, keys and values read in place from one fused projection (`[n, 3 width]`, tokens
/// `3 width` apart) or keys and values from one `[n, 2 width]` buffer give the bits of the
/// same values in buffers of their own, forward and backward, on random shapes.
#[test]
fn strided_inputs_give_the_dense_results() {
    for seed in 0..40 {
        let mut case = Case::random(seed, 20);
        // Self-attention needs as many keys as queries per row.
        case.cu_k = case.cu_q.clone();
        let width = case.config.heads * case.config.d_head;
        let n = *case.cu_q.last().unwrap();
        let mut rng = Rng(seed + 7);
        case.k = rng.values(n * width, 1.5);
        case.v = rng.values(n * width, 1.0);
        let (dense_out, dense_grads) = case.backward(&case.config);
        // The given parts of each token side by side: [q | k | v] and [k | v].
        let interleave = |parts: &[&Vec<f64>]| -> Vec<f64> {
            (0..n)
                .flat_map(|t| {
                    parts
                        .iter()
                        .flat_map(move |p| &p[t * width..(t + 1) * width])
                })
                .copied()
                .collect()
        };
        let (qkv, kv) = (
            interleave(&[&case.q, &case.k, &case.v]),
            interleave(&[&case.k, &case.v]),
        );
        // Buffer `b` from its `part`-th block of `width` values on.
        let from = |b: &[f64], part: usize| (part * width).min(b.len());
        let layouts = [
            (
                "a fused projection",
                PackedQkv {
                    q_stride: 3 * width,
                    kv_stride: 3 * width,
                    ..PackedQkv::new(
                        &qkv,
                        &qkv[from(&qkv, 1)..],
                        &qkv[from(&qkv, 2)..],
                        &case.cu_q,
                        &case.cu_k,
                    )
                },
            ),
            (
                "a fused key-value projection",
                PackedQkv {
                    kv_stride: 2 * width,
                    ..PackedQkv::new(&case.q, &kv, &kv[from(&kv, 1)..], &case.cu_q, &case.cu_k)
                },
            ),
        ];
        for (what, inputs) in layouts {
            let out = attention_forward(&case.config, &inputs);
            assert!(out == dense_out, "seed {seed}: forward from {what}");
            let grads = attention_backward(&case.config, &inputs, &out, &case.d_out);
            assert!(grads == dense_grads, "seed {seed}: backward from {what}");
        }
    }
}

/// A decoding step over a key/value cache against the softmax written out in f64: masked
/// keys get no weight, a row without valid keys gets zeros, f32 within its rounding, and one
/// and two threads give the same bits.
#[test]
fn a_cached_step_matches_the_written_out_softmax() {
    use padless_kernels::attention::cached_attention_step;
    let (batch, heads, d, t_key) = (5, 3, 16, 37);
    let groups = batch * heads;
    let mut rng = Rng(99);
    let q = rng.values(groups * d, 1.5);
    let keys = rng.values(groups * t_key * d, 1.5);
    let values = rng.values(groups * t_key * d, 1.0);
    // Row 0 sees every key, row 3 none, the others a mixture.
    let valid: Vec<bool> = (0..batch * t_key)
        .map(|i| {
            let (row, j) = (i / t_key, i % t_key);
            row == 0 || (row != 3 && (!rng.next().is_multiple_of(3) || j == 0))
        })
        .collect();
    let scale = 0.25;
    let mut want = vec![0.0; groups * d];
    for g in 0..groups {
        let row = g / heads;
        let visible: Vec<usize> = (0..t_key).filter(|&j| valid[row * t_key + j]).collect();
        let scores: Vec<f64> = visible
            .iter()
            .map(|&j| {
                scale
                    * (0..d)
                        .map(|c| q[g * d + c] * keys[(g * t_key + j) * d + c])
                        .sum::<f64>()
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
        for (&j, s) in visible.iter().zip(&scores) {
            for c in 0..d {
                want[g * d + c] += (s - max).exp() / total * values[(g * t_key + j) * d + c];
            }
        }
    }
    let got = cached_attention_step(&q, &keys, &values, Some(&valid), (heads, d), scale, 1);
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!((a - b).abs() < 1e-12, "out[{i}]: {a} vs {b}");
    }
    assert!(
        got[3 * heads * d..4 * heads * d].iter().all(|&v| v == 0.0),
        "row 3 sees nothing"
    );
    let two = cached_attention_step(&q, &keys, &values, Some(&valid), (heads, d), scale, 2);
    assert!(two == got, "two threads");
    let cast = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let got32 = cached_attention_step(
        &cast(&q),
        &cast(&keys),
        &cast(&values),
        Some(&valid),
        (heads, d),
        scale,
        2,
    );
    for (i, (a, b)) in got32.iter().zip(&want).enumerate() {
        assert!((f64::from(*a) - b).abs() < 1e-5, "f32 out[{i}]: {a} vs {b}");
    }
    // Without a mask every key is seen: row 0's results again.
    let all = cached_attention_step(&q, &keys, &values, None, (heads, d), scale, 1);
    assert_eq!(all[..heads * d], got[..heads * d]);
}
