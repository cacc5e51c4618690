//! Checks of command-line values: clap value parsers for counts, fractions and durations
//! (a bad value is a usage error naming the flag, what it takes and what it got), and memory
//! checks of the sizes that flags choose, against [`padless::budget`], before anything of
//! that size is built.

use anyhow::Result;
use padless::budget::{check_elements, check_model_size};
use padless::seq2seq::EncoderDecoderConfig;
use padless::sizes::transformer_parameters;
use padless::transformer::TransformerConfig;

/// Epochs at most: a count that the epoch counters of a resumed run cannot overflow.
pub const MAX_EPOCHS: usize = u32::MAX as usize;

fn whole(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .map_err(|_| format!("expected a whole number, found {text:?}"))
}

/// A count of at least 1 (batch sizes, steps, beam widths, layer sizes).
pub fn count(text: &str) -> Result<usize, String> {
    match whole(text)? {
        0 => Err("expected a whole number of at least 1, found 0".to_string()),
        n => Ok(n),
    }
}

/// Epochs: 1 to [`MAX_EPOCHS`].
pub fn epochs(text: &str) -> Result<usize, String> {
    match whole(text) {
        Ok(n @ 1..=MAX_EPOCHS) => Ok(n),
        _ => Err(format!(
            "expected a number of epochs from 1 to {MAX_EPOCHS}, found {text:?}"
        )),
    }
}

/// A fraction in (0, 1].
pub fn fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
        _ => Err(format!(
            "expected a fraction greater than 0 and at most 1, found {text:?}"
        )),
    }
}

/// A duration in minutes: finite and positive.
pub fn minutes(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!(
            "expected a positive, finite number of minutes, found {text:?}"
        )),
    }
}

/// The most threads the fused kernels use: the caller and one helper.
pub const KERNEL_THREADS: usize = 2;

/// Threads of the fused kernels: 1 up to [`KERNEL_THREADS`], and no more than the cores this
/// process may use.
pub fn kernel_threads(text: &str) -> Result<usize, String> {
    let most = available_threads();
    match whole(text) {
        Ok(n) if (1..=most).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected 1 to {most} threads (the kernels use at most {KERNEL_THREADS}; this process may use {} cores), found {text:?}",
            cores()
        )),
    }
}

/// The kernels' threads that this machine can run: [`KERNEL_THREADS`] or fewer cores.
pub fn available_threads() -> usize {
    cores().min(KERNEL_THREADS)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The parameters of an encoder-decoder, counted from its config (the library's count).
pub use padless::sizes::encoder_decoder_parameters;

/// Floats that a training step keeps per time step and unit of a recurrent layer (gates,
/// states, their gradients): a low estimate, so that a refused size is surely too large.
const FLOATS_PER_UNIT_STEP: u128 = 8;

/// Checks that training the encoder-decoder of `config` fits in the memory budget: its
/// parameters with their gradients and optimizer moments, and the activations of a batch of
/// `rows` words of up to `letters` letters and `phonemes` phonemes. `flags` names the
/// settings in the error (e.g. `--hidden 100000`).
///
/// # Errors
/// A size over the budget, naming `flags`, the size and the budget.
pub fn check_encoder_decoder(
    flags: &str,
    config: &EncoderDecoderConfig,
    rows: usize,
    letters: usize,
    phonemes: usize,
) -> Result<()> {
    let parameters = encoder_decoder_parameters(config);
    check_model_size(
        &format!("{flags}: the model's parameters"),
        u64::try_from(parameters).unwrap_or(u64::MAX),
    )?;
    let (u, d) = (config.d_encoder as u128, 2 * config.d_encoder as u128);
    let per_row = letters as u128 * config.encoder_layers as u128 * 2 * u
        + phonemes as u128 * (config.decoder_layers + config.post_attention_layers + 1) as u128 * d;
    let floats = rows as u128 * per_row * FLOATS_PER_UNIT_STEP;
    check_elements(
        &format!("{flags}: a training batch's activations ({rows} words)"),
        u64::try_from(floats).unwrap_or(u64::MAX),
        4,
    )?;
    Ok(())
}

/// Checks that a [`TransformerConfig`] trained on batches of `rows` pairs of up to `letters`
/// source and `phonemes` target tokens fits in the memory budget: its parameters, and a
/// batch's activations (per token and layer, about eight vectors of `d_model` and two of
/// `d_ff`, and each head's attention weights). `flags` names the settings in the error.
///
/// # Errors
/// A size over the budget, naming `flags`, the size and the budget.
pub fn check_transformer(
    flags: &str,
    config: &TransformerConfig,
    rows: usize,
    letters: usize,
    phonemes: usize,
) -> Result<()> {
    check_model_size(
        &format!("{flags}: the model's parameters"),
        u64::try_from(transformer_parameters(config)).unwrap_or(u64::MAX),
    )?;
    let (d, ff, heads) = (
        config.d_model as u128,
        config.d_ff as u128,
        config.heads as u128,
    );
    let (s, t) = (letters as u128, phonemes as u128);
    let per_token = 8 * d + 2 * ff;
    let per_row = s * config.encoder_layers as u128 * (per_token + heads * s)
        + t * config.decoder_layers as u128 * (per_token + 2 * d + heads * (t + s));
    check_elements(
        &format!("{flags}: a training batch's activations ({rows} words)"),
        u64::try_from(rows as u128 * per_row).unwrap_or(u64::MAX),
        4,
    )?;
    Ok(())
}

/// [`check_decoding`] for a Transformer: each hypothesis holds every decoder layer's keys
/// and values of up to `phonemes` steps and of the `letters` encoder outputs, and its
/// candidates.
///
/// # Errors
/// A size over the budget, naming `flags`, the size and the budget.
pub fn check_transformer_decoding(
    flags: &str,
    config: &TransformerConfig,
    rows: usize,
    beam: usize,
    letters: usize,
    phonemes: usize,
) -> Result<()> {
    let d = config.d_model as u128;
    let per_hypothesis = 4 * (2 * config.decoder_layers as u128 * d * (letters + phonemes) as u128)
        + 24 * config.n_target_tokens as u128;
    check_hypotheses(flags, rows, beam, per_hypothesis)
}

/// Checks that `rows` words of `beam` hypotheses of `per_hypothesis` bytes each fit in the
/// memory budget, naming `flags` in the error.
fn check_hypotheses(flags: &str, rows: usize, beam: usize, per_hypothesis: u128) -> Result<()> {
    let hypotheses = rows as u128 * beam as u128;
    check_elements(
        &format!("{flags}: {hypotheses} hypotheses of {per_hypothesis} bytes"),
        u64::try_from(hypotheses).unwrap_or(u64::MAX),
        u64::try_from(per_hypothesis).unwrap_or(u64::MAX),
    )?;
    Ok(())
}

/// Checks that decoding `rows` words of up to `letters` letters with `beam` hypotheses each
/// fits in the memory budget: each hypothesis holds the decoder's states, its copy of the
/// encoder's outputs and its candidates (a score and two indices per phoneme). `flags` names
/// the settings in the error.
///
/// # Errors
/// A size over the budget, naming `flags`, the size and the budget.
pub fn check_decoding(
    flags: &str,
    config: &EncoderDecoderConfig,
    rows: usize,
    beam: usize,
    letters: usize,
) -> Result<()> {
    let d = 2 * config.d_encoder as u128;
    let layers = (config.decoder_layers + config.post_attention_layers) as u128;
    let per_hypothesis =
        4 * (2 * layers * d + letters as u128 * d) + 24 * config.n_target_tokens as u128;
    check_hypotheses(flags, rows, beam, per_hypothesis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use padless::seq2seq::AttentionKind;

    #[test]
    fn counts_fractions_and_minutes_take_their_range_only() {
        assert_eq!(count("3"), Ok(3));
        assert_eq!(
            count("0"),
            Err("expected a whole number of at least 1, found 0".into())
        );
        assert!(
            count("-1")
                .unwrap_err()
                .contains("expected a whole number, found \"-1\"")
        );
        assert!(count("1e3").is_err() && count("").is_err());
        assert_eq!(epochs("12"), Ok(12));
        for bad in [
            "0",
            "18446744073709551615",
            "4294967296",
            "99999999999999999999999",
        ] {
            assert!(
                epochs(bad).unwrap_err().contains("from 1 to 4294967295"),
                "{bad}"
            );
        }
        assert_eq!(fraction("1"), Ok(1.0));
        assert_eq!(fraction("0.25"), Ok(0.25));
        for bad in ["0", "2", "-0.5", "NaN", "inf", "x"] {
            assert!(
                fraction(bad)
                    .unwrap_err()
                    .contains("greater than 0 and at most 1"),
                "{bad}"
            );
        }
        assert_eq!(minutes("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf"] {
            assert!(minutes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kernel_threads_stop_at_two_and_at_the_cores() {
        assert_eq!(kernel_threads("1"), Ok(1));
        assert!(kernel_threads("0").is_err());
        assert!(kernel_threads("3").unwrap_err().contains("at most 2"));
        assert!(kernel_threads("1000").is_err());
        let most = available_threads();
        assert_eq!(kernel_threads(&most.to_string()), Ok(most));
    }

    fn config(attention: AttentionKind, layers: [usize; 3]) -> EncoderDecoderConfig {
        EncoderDecoderConfig {
            n_source_tokens: 29,
            n_target_tokens: 87,
            d_embedding: 12,
            d_encoder: 10,
            encoder_layers: layers[0],
            decoder_layers: layers[1],
            post_attention_layers: layers[2],
            attention,
            dropout: 0.0,
        }
    }

    #[test]
    fn the_parameter_count_is_the_built_models() {
        let device = padless::default_device();
        for (attention, layers) in [
            (AttentionKind::Dot { scaled: false }, [1, 1, 0]),
            (AttentionKind::General, [2, 3, 1]),
            (AttentionKind::Additive { d_attention: 7 }, [3, 2, 2]),
        ] {
            let config = config(attention, layers);
            let built = config.init(&device).unwrap().n_parameters();
            assert_eq!(
                encoder_decoder_parameters(&config),
                built as u128,
                "{config:?}"
            );
        }
    }

    #[test]
    fn sizes_beyond_the_budget_are_refused_naming_the_flags() {
        let mut huge = config(AttentionKind::Dot { scaled: false }, [1, 1, 0]);
        huge.d_encoder = 100_000;
        let err = check_encoder_decoder("--hidden 100000", &huge, 64, 20, 45)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--hidden 100000: the model's parameters: "),
            "{err}"
        );
        assert!(err.contains("more than the memory budget"), "{err}");
        let small = config(AttentionKind::Dot { scaled: false }, [1, 1, 0]);
        check_encoder_decoder("defaults", &small, 64, 20, 45).unwrap();
        let err = check_encoder_decoder("--batch-size", &small, usize::MAX, 20, 45)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a training batch's activations"), "{err}");
        check_decoding("--beam 4", &small, 512, 4, 20).unwrap();
        let err = check_decoding("--beam", &small, 512, usize::MAX, 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hypotheses of"), "{err}");
    }
}
