//! Helpers of the Transformer test binaries (`transformer.rs`, `transformer_reference.rs`):
//! each parameter's gradient by its module path. Each binary uses a part.
#![allow(dead_code)]

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor};

/// The gradient of every float parameter of `module` as `f64`, by module path joined with
/// `.` (the weight names); zeros for a parameter the loss does not reach.
pub fn gradients_by_name<M: Module>(module: &M, grads: &Gradients) -> HashMap<String, Vec<f64>> {
    struct Collect<'a> {
        path: Vec<String>,
        grads: &'a Gradients,
        out: HashMap<String, Vec<f64>>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            let n = value.dims().iter().product();
            let grad = value
                .grad(self.grads)
                .map(|g| {
                    g.into_data()
                        .convert::<f64>()
                        .try_into_vec::<f64>()
                        .expect("f64 values")
                })
                .unwrap_or_else(|| vec![0.0; n]);
            self.out.insert(self.path.join("."), grad);
        }
    }
    let mut collect = Collect {
        path: Vec::new(),
        grads,
        out: HashMap::new(),
    };
    module.visit(&mut collect);
    collect.out
}
