//! The seed question: a character seq2seq model (Masking, LSTM, RepeatVector, LSTM,
//! TimeDistributed softmax) whose input mask is consumed by the encoder. The target mask,
//! built from the padding one-hot `#` = [0, 0, 1], gives the masked loss back.
//!
//! Claim checked: the loss equals the mean over the non-padding steps only, computed by
//! hand, and differs from the unmasked mean Keras reports when the mask is lost.
//!
//! Run: `cargo run -p padless --example seed_question`

use padless::losses::*;
use padless::prelude::*;

fn main() -> padless::Result<()> {
    let device = default_device();
    device.seed(123);
    let model = Sequential::new(vec![
        AnyLayer::Masking(Masking::new(0.0)),
        AnyLayer::Lstm(LstmConfig::new(3, 10).init(&device)),
        AnyLayer::RepeatVector(RepeatVector::new(5)),
        AnyLayer::Lstm(
            LstmConfig::new(10, 10)
                .with_return_sequences(true)
                .init(&device),
        ),
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
    print!("{}", model.summary(input)?);
    // '##abb' and '#babb': inputs pad with all-zero steps, targets with '#' = [0, 0, 1].
    let x = [
        [0., 0., 0.],
        [0., 0., 0.],
        [1., 0., 0.],
        [0., 1., 0.],
        [0., 1., 0.],
        [0., 0., 0.],
        [0., 1., 0.],
        [1., 0., 0.],
        [0., 1., 0.],
        [0., 1., 0.],
    ]
    .concat();
    let y = [
        [0., 0., 1.],
        [0., 0., 1.],
        [1., 0., 0.],
        [0., 1., 0.],
        [0., 1., 0.],
        [0., 0., 1.],
        [0., 1., 0.],
        [1., 0., 0.],
        [0., 1., 0.],
        [0., 1., 0.],
    ]
    .concat();
    let output = model.forward(Value::sequence(tensor_from(&x, [2, 5, 3], &device), None))?;
    assert!(output.mask().is_none(), "the encoder consumed the mask");
    let (y_pred, _) = output.into_sequence("seed")?;
    let p = f32_vec(y_pred.clone());
    let term = |step: usize| {
        let class = (0..3).find(|&c| y[step * 3 + c] == 1.0).unwrap();
        -(p[step * 3 + class] / p[step * 3..step * 3 + 3].iter().sum::<f32>()).ln()
    };
    let valid_steps: Vec<usize> = (0..10).filter(|&s| y[s * 3 + 2] != 1.0).collect();
    let by_hand = valid_steps.iter().map(|&s| term(s)).sum::<f32>() / valid_steps.len() as f32;
    let unmasked_by_hand = (0..10).map(term).sum::<f32>() / 10.0;

    let loss = SequenceLoss::new(LossKind::CategoricalCrossentropy { from_logits: false });
    let targets = || Targets::Dense(tensor_from(&y, [2, 5, 3], &device));
    let dropped_by = model.mask_dropped_by(input)?.unwrap_or_default();
    let masked = loss.compute(
        LossInputs::new(targets(), y_pred.clone())
            .with_target_mask(TargetMask::PaddingVector(vec![0.0, 0.0, 1.0]))
            .with_mask_dropped_by(dropped_by.clone()),
    )?;
    let masked = f32_vec(masked.value.expect("mean"))[0];
    let unmasked =
        loss.compute(LossInputs::new(targets(), y_pred).with_mask_dropped_by(dropped_by))?;
    let unmasked = f32_vec(unmasked.value.expect("mean"))[0];
    println!(
        "\nmasked loss   {masked:.6} (by hand over the {} non-'#' steps: {by_hand:.6})",
        valid_steps.len()
    );
    println!("unmasked loss {unmasked:.6} (by hand over all 10 steps: {unmasked_by_hand:.6})");
    assert!(
        (masked - by_hand).abs() < 1e-6,
        "masked loss equals the hand-computed mean"
    );
    assert!((unmasked - unmasked_by_hand).abs() < 1e-6);
    assert!((masked - unmasked).abs() > 1e-4, "masking changes the loss");
    println!("claim checked: the target mask keeps '#' out of the loss");
    Ok(())
}
