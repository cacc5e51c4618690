//! Configs: losses read and write by their Keras names.

use burn::tensor::Tensor;
use padless::losses::LossKind;

#[test]
fn losses_read_by_name_or_table_and_write_as_a_table() {
    let read = |text: &str| serde_json::from_str::<LossKind>(text);
    assert!(matches!(
        read(r#""sparse_categorical_crossentropy""#).unwrap(),
        LossKind::SparseCategoricalCrossentropy { from_logits: false }
    ));
    assert!(matches!(
        read(r#"{"name": "categorical_crossentropy", "from_logits": true}"#).unwrap(),
        LossKind::CategoricalCrossentropy { from_logits: true }
    ));
    assert!(matches!(
        read(r#"{"name": "huber", "delta": 2.5}"#).unwrap(),
        LossKind::Huber { delta: 2.5 }
    ));
    assert!(matches!(
        read(r#""mean_absolute_error""#).unwrap(),
        LossKind::MeanAbsoluteError
    ));
    let written =
        serde_json::to_string(&LossKind::BinaryCrossentropy { from_logits: true }).unwrap();
    assert_eq!(
        written,
        r#"{"name":"binary_crossentropy","from_logits":true}"#
    );
    assert!(matches!(
        read(&written).unwrap(),
        LossKind::BinaryCrossentropy { from_logits: true }
    ));
    let err = read(r#""mean_sqared_error""#).unwrap_err().to_string();
    assert!(
        err.contains("unknown variant `mean_sqared_error`") && err.contains("mean_squared_error"),
        "{err}"
    );
    let err = read(r#"{"name": "mean_squared_error", "from_logits": true}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            r#"unknown field "from_logits" in the loss mean_squared_error; it takes none"#
        ),
        "{err}"
    );
    let err = read(r#"{"name": "huber", "detla": 2.0}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(r#"unknown field "detla" in the loss huber; did you mean "delta"?"#),
        "{err}"
    );
    let custom = LossKind::Custom(padless::losses::CustomLoss::PerStep(std::sync::Arc::new(
        |y: Tensor<3>, _| y.sum_dim(2).squeeze_dim::<2>(2),
    )));
    assert!(serde_json::to_string(&custom).is_err());
}
