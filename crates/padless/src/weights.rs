//! Weights in Keras layout ([`NamedWeight`]) and their safetensors files.
//!
//! Every layer lists its weights under Keras names and shapes (`kernel [d_input, n_gates *
//! d_hidden]`, `recurrent_kernel [d_hidden, n_gates * d_hidden]`, `bias`), so weights can be
//! moved to and from Keras (`layer.get_weights()` / `set_weights()` in the same order).
//! A stack saves them as `"{layer_name}/{weight_name}"` tensors of one safetensors file,
//! written to a temporary file and renamed, so an interrupted save never leaves half a file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::tensor::Tensor;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
/// The atomic writers of [`crate::files`], where the weight and checkpoint writers import them.
pub use crate::files::{write_atomically, write_atomically_with};
use crate::tensor_util::{f32_vec, tensor_from};

/// One weight: its Keras name, shape and row-major `f32` values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedWeight {
    /// Keras name (`kernel`, `recurrent_kernel`, `bias`, `gamma`…), or `"{layer}/{name}"` in a
    /// stack.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl NamedWeight {
    /// Reads a parameter.
    pub fn from_param<const D: usize>(name: &str, param: &Param<Tensor<D>>) -> Self {
        let value = param.val();
        NamedWeight {
            name: name.to_string(),
            shape: value.dims().to_vec(),
            values: f32_vec(value),
        }
    }

    /// This weight under `"{prefix}/{name}"`.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.name = format!("{prefix}/{}", self.name);
        self
    }
}

/// Finds `name` among `weights` and checks its shape.
///
/// # Errors
/// [`Error::Weight`] when it is missing or its shape differs.
pub fn find_weight<'a>(
    weights: &'a [NamedWeight],
    name: &str,
    shape: &[usize],
) -> Result<&'a NamedWeight> {
    let weight = weights
        .iter()
        .find(|w| w.name == name)
        .ok_or_else(|| Error::Weight {
            name: name.to_string(),
            message: format!(
                "missing (given: {})",
                weights
                    .iter()
                    .map(|w| w.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    if weight.shape != shape || weight.values.len() != shape.iter().product::<usize>() {
        return Err(Error::Weight {
            name: name.to_string(),
            message: format!(
                "expected shape {shape:?}, found {:?} with {} values",
                weight.shape,
                weight.values.len()
            ),
        });
    }
    Ok(weight)
}

/// Replaces `param` by the weight `name` of `weights` (same shape, same parameter id).
///
/// # Errors
/// [`Error::Weight`] when it is missing or its shape differs.
pub fn load_param<const D: usize>(
    param: &mut Param<Tensor<D>>,
    weights: &[NamedWeight],
    name: &str,
) -> Result<()> {
    // Shape and device without running the parameter's lazy initialiser: loading a model
    // would otherwise draw (and orthonormalise) every recurrent kernel only to replace it.
    let dims: [usize; D] = param.lazy_shape().dims();
    let weight = find_weight(weights, name, &dims)?;
    let mut replaced = Param::from_tensor(tensor_from(&weight.values, dims, &param.lazy_device()));
    replaced.id = param.id;
    *param = replaced;
    Ok(())
}

/// Checks that no weights were given to a layer that has none.
///
/// # Errors
/// [`Error::Weight`] naming the first unexpected weight.
pub fn expect_no_weights(layer: &str, weights: &[NamedWeight]) -> Result<()> {
    match weights.first() {
        None => Ok(()),
        Some(w) => Err(Error::Weight {
            name: w.name.clone(),
            message: format!("{layer} has no weights"),
        }),
    }
}

/// The weights whose name starts with `"{prefix}/"`, with the prefix removed.
pub fn strip_prefix(weights: &[NamedWeight], prefix: &str) -> Vec<NamedWeight> {
    let start = format!("{prefix}/");
    weights
        .iter()
        .filter_map(|w| {
            w.name.strip_prefix(&start).map(|rest| NamedWeight {
                name: rest.to_string(),
                shape: w.shape.clone(),
                values: w.values.clone(),
            })
        })
        .collect()
}

/// Writes weights to a safetensors file atomically (temporary file in the same folder, then
/// rename), with `metadata` stored in the header.
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn save_safetensors(
    path: &Path,
    weights: &[NamedWeight],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let bytes = serialize_safetensors(path, weights, &[], metadata.clone())?;
    write_atomically(path, &bytes)
}

/// The number format of the weights in a file that [`save_safetensors_as`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredFloat {
    /// 32-bit floats, as computed.
    F32,
    /// IEEE half precision (11-bit significand, largest value 65,504): half the size; each
    /// weight rounded to the nearest representable value.
    F16,
    /// bfloat16 (8-bit significand, f32's range): half the size, coarser than `F16`.
    Bf16,
}

/// [`save_safetensors`] with the weights stored as `format` (rounded to nearest, ties to
/// even); [`load_safetensors`] widens them back to f32. A value that `format` cannot hold
/// (beyond f16's range, or not finite) is an error naming the weight, never a silent
/// infinity.
///
/// # Errors
/// [`Error::WeightFile`] for a value out of range, [`Error::Io`] when the file cannot be
/// written.
pub fn save_safetensors_as(
    path: &Path,
    weights: &[NamedWeight],
    metadata: &HashMap<String, String>,
    format: StoredFloat,
) -> Result<()> {
    let dtype = match format {
        StoredFloat::F32 => return save_safetensors(path, weights, metadata),
        StoredFloat::F16 => Dtype::F16,
        StoredFloat::Bf16 => Dtype::BF16,
    };
    let bad = |message: String| Error::WeightFile {
        path: path.to_path_buf(),
        message,
    };
    let mut data = Vec::with_capacity(weights.len());
    for w in weights {
        let mut bytes = Vec::with_capacity(2 * w.values.len());
        for (i, &v) in w.values.iter().enumerate() {
            let narrow = match format {
                StoredFloat::F16 => half::f16::from_f32(v).to_le_bytes(),
                _ => half::bf16::from_f32(v).to_le_bytes(),
            };
            let wide = match format {
                StoredFloat::F16 => half::f16::from_le_bytes(narrow).to_f32(),
                _ => half::bf16::from_le_bytes(narrow).to_f32(),
            };
            if !wide.is_finite() {
                return Err(bad(format!(
                    "weight {} [{i}] = {v} does not fit {format:?}",
                    w.name
                )));
            }
            bytes.extend_from_slice(&narrow);
        }
        data.push(bytes);
    }
    let mut views = BTreeMap::new();
    for (w, bytes) in weights.iter().zip(&data) {
        let view =
            TensorView::new(dtype, w.shape.clone(), bytes).map_err(|e| bad(e.to_string()))?;
        views.insert(w.name.clone(), view);
    }
    let bytes =
        safetensors::serialize(views, Some(metadata.clone())).map_err(|e| bad(e.to_string()))?;
    write_atomically(path, &bytes)
}

/// The bytes of a safetensors file holding `weights` as f32 tensors and each `raw` entry as a
/// one-dimensional u8 tensor, with `metadata` in the header.
///
/// # Errors
/// [`Error::WeightFile`] when a shape does not match its values.
pub(crate) fn serialize_safetensors(
    path: &Path,
    weights: &[NamedWeight],
    raw: &[(&str, &[u8])],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let bad = |e: safetensors::SafeTensorError| Error::WeightFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let data: Vec<Vec<u8>> = weights
        .iter()
        .map(|w| w.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let mut views = BTreeMap::new();
    for (w, bytes) in weights.iter().zip(&data) {
        let view = TensorView::new(Dtype::F32, w.shape.clone(), bytes).map_err(bad)?;
        views.insert(w.name.clone(), view);
    }
    for (name, bytes) in raw {
        let view = TensorView::new(Dtype::U8, vec![bytes.len()], bytes).map_err(bad)?;
        views.insert(name.to_string(), view);
    }
    safetensors::serialize(views, Some(metadata)).map_err(bad)
}

/// A tensor kept as raw bytes under its name (read by name, not converted to f32).
pub(crate) type RawTensor = (String, Vec<u8>);

/// The tensors of a safetensors file: f32 weights (f16 and bfloat16 ones widened to f32),
/// and the u8 tensors named in `raw_names` as bytes. Any other dtype is an error naming the
/// tensor.
///
/// # Errors
/// [`Error::WeightFile`] for a truncated or corrupt file or an unexpected dtype.
pub(crate) fn parse_tensors(
    path: &Path,
    bytes: &[u8],
    raw_names: &[&str],
) -> Result<(Vec<NamedWeight>, Vec<RawTensor>)> {
    let bad = |message: String| Error::WeightFile {
        path: path.to_path_buf(),
        message,
    };
    let tensors =
        SafeTensors::deserialize(bytes).map_err(|e| bad(format!("truncated or corrupt ({e})")))?;
    let mut weights = Vec::new();
    let mut raw = Vec::new();
    for (name, view) in tensors.tensors() {
        match view.dtype() {
            Dtype::U8 if raw_names.contains(&name.as_str()) => {
                raw.push((name, view.data().to_vec()))
            }
            Dtype::F32 => {
                let values = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                weights.push(NamedWeight {
                    name,
                    shape: view.shape().to_vec(),
                    values,
                });
            }
            dtype @ (Dtype::F16 | Dtype::BF16) => {
                let values = view
                    .data()
                    .chunks_exact(2)
                    .map(|c| match dtype {
                        Dtype::F16 => half::f16::from_le_bytes([c[0], c[1]]).to_f32(),
                        _ => half::bf16::from_le_bytes([c[0], c[1]]).to_f32(),
                    })
                    .collect();
                weights.push(NamedWeight {
                    name,
                    shape: view.shape().to_vec(),
                    values,
                });
            }
            other => {
                return Err(bad(format!(
                    "tensor {name}: expected F32, F16 or BF16, found {other:?}"
                )));
            }
        }
    }
    weights.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((weights, raw))
}

/// Reads every tensor of a safetensors file as `f32` weights, with the header's metadata.
///
/// # Errors
/// [`Error::Io`] or [`Error::WeightFile`] for a missing, truncated or non-`f32` file.
pub fn load_safetensors(path: &Path) -> Result<(Vec<NamedWeight>, HashMap<String, String>)> {
    let bytes = crate::files::read_within_budget(path)?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::WeightFile {
        path: path.to_path_buf(),
        message: format!("not a safetensors file ({e})"),
    })?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let (weights, _) = parse_tensors(path, &bytes, &[])?;
    Ok((weights, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<NamedWeight> {
        vec![
            NamedWeight {
                name: "a/kernel".into(),
                shape: vec![2, 3],
                values: vec![1.0, -2.0, 3.5, 0.0, 1e-8, 7.0],
            },
            NamedWeight {
                name: "a/bias".into(),
                shape: vec![3],
                values: vec![0.5, 0.25, -0.125],
            },
        ]
    }

    #[test]
    fn sixteen_bit_files_round_to_nearest_and_widen_on_load() {
        let dir = std::env::temp_dir().join(format!("padless-w16-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let meta = HashMap::new();
        // 1 + 2^-11 is halfway between f16's 1 and 1 + 2^-10: ties go to even (1).
        // 1 + 3 * 2^-12 rounds up to 1 + 2^-10. bfloat16 keeps 8 bits: 1 + 2^-8 is its step.
        let w = vec![NamedWeight {
            name: "w".into(),
            shape: vec![5],
            values: vec![
                1.0 + 2f32.powi(-11),
                1.0 + 3.0 * 2f32.powi(-12),
                -0.5,
                3.0e-5,
                1.0 + 2f32.powi(-8),
            ],
        }];
        let path = dir.join("f16.safetensors");
        save_safetensors_as(&path, &w, &meta, StoredFloat::F16).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() < 200);
        let (loaded, _) = load_safetensors(&path).unwrap();
        // 3e-5 is subnormal in f16 (step 2^-24): the nearest multiple of 2^-24.
        let subnormal = (3.0e-5f64 * 2f64.powi(24)).round() * 2f64.powi(-24);
        assert_eq!(
            loaded[0].values,
            vec![
                1.0,
                1.0 + 2f32.powi(-10),
                -0.5,
                subnormal as f32,
                1.0 + 2f32.powi(-8)
            ]
        );
        let path = dir.join("bf16.safetensors");
        save_safetensors_as(&path, &w, &meta, StoredFloat::Bf16).unwrap();
        let (loaded, _) = load_safetensors(&path).unwrap();
        // bfloat16: 1 + 2^-11 and 1 + 3 * 2^-12 both round to 1; 1 + 2^-8 is a tie, to even 1.
        assert_eq!(loaded[0].values[..3], [1.0, 1.0, -0.5]);
        assert_eq!(loaded[0].values[4], 1.0);
        let too_large = vec![NamedWeight {
            name: "big".into(),
            shape: vec![1],
            values: vec![1.0e5],
        }];
        let err = save_safetensors_as(
            &dir.join("x.safetensors"),
            &too_large,
            &meta,
            StoredFloat::F16,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("big") && err.contains("100000"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn safetensors_round_trip_keeps_names_shapes_values_and_metadata() {
        let dir = std::env::temp_dir().join(format!("padless-w-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        let meta = HashMap::from([("format".to_string(), "padless".to_string())]);
        save_safetensors(&path, &sample(), &meta).unwrap();
        let (loaded, loaded_meta) = load_safetensors(&path).unwrap();
        let mut expected = sample();
        expected.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(loaded, expected);
        assert_eq!(
            loaded_meta.get("format").map(String::as_str),
            Some("padless")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_file_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("padless-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        save_safetensors(&path, &sample(), &HashMap::new()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = load_safetensors(&path).unwrap_err().to_string();
        assert!(err.contains("w.safetensors"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_interrupted_write_leaves_the_previous_file_intact() {
        let dir = std::env::temp_dir().join(format!("padless-a-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ckpt");
        write_atomically(&path, b"previous").unwrap();
        let err = write_atomically_with(&path, |file| {
            use std::io::Write;
            file.write_all(b"half of the n")?;
            Err(std::io::Error::other("interrupted"))
        })
        .unwrap_err();
        // The error names the file; the write's own error is its source.
        assert!(err.to_string().contains("ckpt"), "{err}");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("interrupted"), "{err:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"previous");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn find_weight_names_both_shapes() {
        let weights = sample();
        let err = find_weight(&weights, "a/kernel", &[3, 2])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "weight a/kernel: expected shape [3, 2], found [2, 3] with 6 values"
        );
        let err = find_weight(&weights, "a/gamma", &[3])
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
