//! The library reports warnings through the `log` crate, so the program that uses it decides
//! where they go (the CLI prints them on stderr): the loss's warning when the inputs' mask was
//! consumed and no target mask was given arrives as one `Warn` record with its text.

use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use padless::prelude::*;

/// Keeps every record: level, target and message.
struct Capture(Mutex<Vec<(Level, String, String)>>);

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        self.0.lock().unwrap().push((
            record.level(),
            record.target().to_string(),
            record.args().to_string(),
        ));
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

#[test]
fn the_loss_warns_through_log_when_the_mask_was_consumed() {
    log::set_logger(&CAPTURE).expect("the only logger of this test binary");
    log::set_max_level(LevelFilter::Trace);
    let device = default_device();
    // One row of two steps over three classes; the second step is padding.
    let probs = tensor_from(&[0.7, 0.2, 0.1, 0.3, 0.3, 0.4], [1, 2, 3], &device);
    let targets = || {
        Targets::Dense(tensor_from(
            &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            [1, 2, 3],
            &device,
        ))
    };
    let loss = SequenceLoss::new(LossKind::CategoricalCrossentropy { from_logits: false });

    let unmasked = loss
        .compute(LossInputs::new(targets(), probs.clone()).with_mask_dropped_by("lstm"))
        .unwrap();
    let expected = "loss computed over every step, padding included: the inputs' mask was \
                    consumed by lstm and no target mask was given (pass one with the targets)";
    assert_eq!(unmasked.warnings, vec![expected.to_string()]);
    let records = std::mem::take(&mut *CAPTURE.0.lock().unwrap());
    assert_eq!(records.len(), 1, "{records:?}");
    let (level, target, message) = &records[0];
    assert_eq!(*level, Level::Warn);
    assert!(target.starts_with("padless"), "target {target}");
    assert_eq!(message, expected);

    // With a target mask the loss reads only the valid step and has nothing to warn about.
    let masked = loss
        .compute(
            LossInputs::new(targets(), probs)
                .with_target_mask(TargetMask::PaddingVector(vec![0.0, 0.0, 1.0]))
                .with_mask_dropped_by("lstm"),
        )
        .unwrap();
    assert!(masked.warnings.is_empty());
    let value = f32_vec(masked.value.unwrap())[0];
    assert!((value + 0.7f32.ln()).abs() < 1e-6, "{value}");
    assert!(CAPTURE.0.lock().unwrap().is_empty());
}
