//! Weights named by their module path, joined with `.`: the fields of the transformer types
//! are named as PyTorch's modules are, so these names are PyTorch's `state_dict` keys
//! (`layers.0.self_attn.in_proj_weight`, `norm1.bias`).

use std::collections::HashSet;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::weights::{NamedWeight, find_weight, load_param};

/// The path of the parameter being visited, kept by `enter_module` / `exit_module`.
#[derive(Default)]
struct Path(Vec<String>);

impl Path {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }

    fn exit(&mut self) {
        self.0.pop();
    }

    fn name(&self) -> String {
        self.0.join(".")
    }
}

/// Every float parameter of `module` with its path name, shape and values.
pub(crate) fn named_weights<M: Module>(module: &M) -> Vec<NamedWeight> {
    struct Collect {
        path: Path,
        out: Vec<NamedWeight>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out
                .push(NamedWeight::from_param(&self.path.name(), param));
        }
    }
    let mut collect = Collect {
        path: Path::default(),
        out: Vec::new(),
    };
    module.visit(&mut collect);
    collect.out
}

/// The path name and shape of every float parameter of `module`, without reading values.
fn shapes<M: Module>(module: &M) -> Vec<(String, Vec<usize>)> {
    struct Collect {
        path: Path,
        out: Vec<(String, Vec<usize>)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let dims: [usize; D] = param.lazy_shape().dims();
            self.out.push((self.path.name(), dims.to_vec()));
        }
    }
    let mut collect = Collect {
        path: Path::default(),
        out: Vec::new(),
    };
    module.visit(&mut collect);
    collect.out
}

/// Replaces every float parameter of `module` by the weight of `weights` named by its path
/// (same shapes, same parameter ids). `what` names the module in errors.
///
/// # Errors
/// [`Error::Weight`] for a missing weight, one of another shape, or a weight that names no
/// parameter; `module` is unchanged then.
pub(crate) fn load_named<M: Module>(
    module: &mut M,
    weights: &[NamedWeight],
    what: &str,
) -> Result<()> {
    let expected = shapes(module);
    for (name, shape) in &expected {
        find_weight(weights, name, shape)?;
    }
    let known: HashSet<&str> = expected.iter().map(|(name, _)| name.as_str()).collect();
    if let Some(unknown) = weights.iter().find(|w| !known.contains(w.name.as_str())) {
        return Err(Error::Weight {
            name: unknown.name.clone(),
            message: format!(
                "{what} has no such weight (expected: {})",
                expected
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    struct Load<'a> {
        path: Path,
        weights: &'a [NamedWeight],
    }
    impl ModuleMapper for Load<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            load_param(&mut param, self.weights, &self.path.name())
                .expect("every name and shape was checked before mapping");
            param
        }
    }
    let mut load = Load {
        path: Path::default(),
        weights,
    };
    *module = module.clone().map(&mut load);
    Ok(())
}
