//! `OpUnit` and `CellUnit`: one op or one cell outside a network, built by the same builders as
//! `NasNet` (so with its parameter names), forward and backward with a gradient on every
//! parameter and on the inputs.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use nasnet_cells::{CellUnit, OpUnit};
use nasnet_searchspace::{named, CellRole, Op};

/// Every variable of `varmap` and every input got a finite, non-zero-shaped gradient.
fn check_grads(loss: &Tensor, varmap: &VarMap, inputs: &[&Var], what: &str) {
    let grads = loss.backward().unwrap();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        if name.contains("running_") {
            continue;
        }
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
        assert_eq!(g.dims(), var.dims(), "{what}: {name}");
        let s = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(s.is_finite(), "{what}: {name} gradient is not finite");
    }
    for x in inputs {
        assert!(
            grads.get(x.as_tensor()).is_some(),
            "{what}: no input gradient"
        );
    }
}

#[test]
fn every_op_as_a_unit_maps_channels_and_stride() {
    let dev = Device::Cpu;
    let x = Var::randn(0f32, 1.0, (2, 6, 9, 9), &dev).unwrap();
    for op in Op::ALL {
        for stride in [1, 2] {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let unit = OpUnit::new(op, 6, 8, stride, vb.pp("op")).unwrap();
            let y = unit.forward_t(x.as_tensor(), true).unwrap();
            let side = 9usize.div_ceil(stride);
            assert_eq!(y.dims(), &[2, 8, side, side], "{op} stride {stride}");
            let loss = (y.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            check_grads(&loss, &varmap, &[&x], &format!("{op} stride {stride}"));
        }
    }
}

#[test]
fn nasnet_a_cells_as_units() {
    let dev = Device::Cpu;
    let genotype = named::nasnet_a();
    let x = Var::randn(0f32, 1.0, (2, 12, 8, 8), &dev).unwrap();
    let prev = Var::randn(0f32, 1.0, (2, 10, 8, 8), &dev).unwrap();
    // NASNet-A's normal cell concatenates 6 states of F, its reduction cell 4.
    for (role, out_channels, side) in [
        (CellRole::Normal, 6 * 4, 8),
        (CellRole::Reduction, 4 * 4, 4),
    ] {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cell =
            CellUnit::new(genotype.cell(role), role, 4, 12, Some(10), vb.pp("cell_0")).unwrap();
        assert_eq!(cell.out_channels(), out_channels);
        let y = cell
            .forward_t(x.as_tensor(), Some(prev.as_tensor()), true)
            .unwrap();
        assert_eq!(y.dims(), &[2, out_channels, side, side], "{role:?}");
        // Parameter names are the ports' (e.g. the separable conv of block 0).
        let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        assert!(
            names
                .iter()
                .any(|n| n == "cell_0.comb_iter_0_left.separable_1.depthwise_conv2d.weight"),
            "{names:?}"
        );
        let loss = y.sqr().unwrap().mean_all().unwrap();
        check_grads(&loss, &varmap, &[&x, &prev], &format!("{role:?}"));
        // Eval mode runs on the running statistics.
        let e = cell
            .forward_t(x.as_tensor(), Some(prev.as_tensor()), false)
            .unwrap();
        assert_eq!(e.dims(), y.dims());
    }
}
