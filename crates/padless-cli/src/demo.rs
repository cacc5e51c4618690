//! `padless demo`: the seed question's model on its own batch.

use anyhow::{Context, ensure};
use padless::prelude::*;

/// The seed question's batch: `##abb` and `#babb`, one-hot over `a, b, #`, the input
/// padding `#` written as an all-zero vector so `Masking(0)` finds it.
const SEED_BATCH: [[[f32; 3]; 5]; 2] = [
    [[0., 0., 0.], [0., 0., 0.], [1., 0., 0.], [0., 1., 0.], [0., 1., 0.]],
    [[0., 0., 0.], [0., 1., 0.], [1., 0., 0.], [0., 1., 0.], [0., 1., 0.]],
];

pub fn run(seed: u64) -> anyhow::Result<()> {
    let device = default_device();
    device.seed(seed);
    let model = Sequential::new(vec![
        AnyLayer::Masking(Masking::new(0.0)),
        AnyLayer::Lstm(LstmConfig::new(3, 10).init(&device)),
        AnyLayer::RepeatVector(RepeatVector::new(5)),
        AnyLayer::Lstm(LstmConfig::new(10, 10).with_return_sequences(true).init(&device)),
        AnyLayer::TimeDistributed(TimeDistributed::new(
            DenseConfig::new(10, 3)
                .with_activation(ActivationKind::Softmax)
                .init(&device),
        )),
    ]);
    let input = Spec::Sequence {
        time: Some(5),
        features: 3,
        masked: false,
    };
    println!("The seed question's model:\n");
    print!("{}", model.summary(input).context("checking the model")?);

    let flat: Vec<f32> = SEED_BATCH.iter().flatten().flatten().copied().collect();
    let x = tensor_from(&flat, [2, 5, 3], &device);
    let (masked, mask) = Masking::new(0.0).forward(x.clone(), None)?;
    println!("\nMask found by Masking(0): {}", render_mask(&mask));

    let AnyLayer::Lstm(encoder) = &model.layers[1] else {
        anyhow::bail!("layer 1 is the encoder");
    };
    let padded = encoder.forward(masked, Some(&mask), None)?;
    let mut worst = 0.0f32;
    for (row, length) in mask.lengths().into_iter().enumerate() {
        let valid: Vec<f32> = SEED_BATCH[row][5 - length..].iter().flatten().copied().collect();
        let alone = encoder.forward(tensor_from(&valid, [1, length, 3], &device), None, None)?;
        let got = f32_vec(padded.last.clone())[row * 10..(row + 1) * 10].to_vec();
        for (a, b) in got.iter().zip(f32_vec(alone.last)) {
            worst = worst.max((a - b).abs());
        }
    }
    println!(
        "Encoder state of the padded batch vs each word run alone: max |difference| = {worst:.1e}"
    );
    ensure!(worst < 1e-6, "padding leaked into the encoder state ({worst})");
    println!("Padding invariant: yes");

    let output = model.forward(Value::sequence(x, None))?;
    let (probabilities, _) = output.into_sequence("demo")?;
    let probabilities = f32_vec(probabilities);
    println!("\nDecoder output (untrained; symbols a, b, #):");
    for row in 0..2 {
        let word: String = (0..5)
            .map(|t| {
                let p = &probabilities[(row * 5 + t) * 3..(row * 5 + t + 1) * 3];
                let best = (0..3).max_by(|&i, &j| p[i].total_cmp(&p[j])).unwrap_or(0);
                ['a', 'b', '#'][best]
            })
            .collect();
        println!("  row {row}: {word}");
    }
    Ok(())
}

fn render_mask(mask: &Mask) -> String {
    let [_, time] = mask.dims();
    mask.to_vec()
        .chunks(time)
        .map(|row| row.iter().map(|&v| if v { '1' } else { '0' }).collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}
