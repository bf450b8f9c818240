//! The shared-weights network: a child under the shared weights is the standalone network of
//! its genotype with those weights copied in (f64), and a backward pass through a child reaches
//! only what the child placed.

use std::collections::HashSet;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nasnet_cells::{sharing_space, NasNet, NasNetConfig, Supernet};
use nasnet_searchspace::{CellRole, Genotype, SearchSpace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A small CIFAR-stem network (1@96: F = 4, 8, 16) on 8x8 RGB images, f64.
fn config() -> NasNetConfig {
    NasNetConfig::cifar(1, 96)
        .unwrap()
        .with_aux_head(false)
        .with_image_size(8)
        .with_classes(5)
}

fn supernet(space: &SearchSpace) -> Supernet {
    Supernet::new(space, &config(), 3, DType::F64, &Device::Cpu).unwrap()
}

fn input(seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f64> = (0..4 * 3 * 8 * 8)
        .map(|_| rand::Rng::random_range(&mut rng, -1.0..1.0))
        .collect();
    Tensor::from_vec(values, (4, 3, 8, 8), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// A standalone network of `genotype` (its own VarMap, as `nasnet train` builds one) with every
/// tensor set from the supernet's copy.
fn standalone_copy(net: &Supernet, genotype: &Genotype) -> NasNet {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let model = NasNet::new(genotype, &config(), vb).unwrap();
    let tensors = net.child_tensors(genotype).unwrap();
    let vars = varmap.data().lock().unwrap();
    assert_eq!(
        vars.len(),
        tensors.len(),
        "one shared tensor per standalone tensor"
    );
    for (name, var) in vars.iter() {
        let t = tensors
            .get(name)
            .unwrap_or_else(|| panic!("no shared tensor for `{name}`"));
        var.set(t).unwrap();
    }
    drop(vars);
    model
}

#[test]
fn a_child_computes_what_the_standalone_network_with_its_weights_computes() {
    let space = sharing_space(&SearchSpace::nasnet());
    let net = supernet(&space);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = input(5);
    for _ in 0..4 {
        let genotype = space.sample(&mut rng);
        let child = net.child(&genotype).unwrap();
        let alone = standalone_copy(&net, &genotype);
        // Batch statistics (how the search trains and scores children), then the running
        // statistics the training pass above updated in both.
        for train in [true, false] {
            let a = child.forward_t(&x, train).unwrap().logits;
            let b = alone.forward_t(&x, train).unwrap().logits;
            let diff = max_abs_diff(&a, &b);
            assert!(
                diff < 1e-12,
                "train={train}: child and copy differ by {diff}"
            );
        }
        assert_eq!(child.parameter_count(), alone.parameter_count());
    }
}

#[test]
fn children_that_place_the_same_op_read_the_same_weights() {
    let space = sharing_space(&SearchSpace::nasnet());
    let net = supernet(&space);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let a = space.sample(&mut rng);
    let mut b = a.clone();
    // Change the op of the last normal block's right side only.
    let last = b.normal.blocks.len() - 1;
    let old = b.normal.blocks[last].ops[1];
    b.normal.blocks[last].ops[1] = *space.ops.iter().find(|&&o| o != old).unwrap();
    let ta = net.child_tensors(&a).unwrap();
    let tb = net.child_tensors(&b).unwrap();
    let changed = format!("comb_iter_{last}_right.");
    let mut compared = 0;
    for (name, t) in &ta {
        if name.contains(&changed) && !name.starts_with("reduction") {
            continue;
        }
        if let Some(u) = tb.get(name) {
            if t.shape() == u.shape() {
                assert_eq!(max_abs_diff(t, u), 0.0, "`{name}` differs");
                compared += 1;
            }
        }
    }
    assert!(compared > 50, "only {compared} tensors compared");
    // And a child is refused when the space cannot share it (a concat block).
    let mut concat = a.clone();
    concat.normal.blocks[0].combine = nasnet_searchspace::Combine::Concat;
    assert!(net.child(&concat).is_err());
    assert!(Supernet::new(
        &SearchSpace::nasnet(),
        &config(),
        0,
        DType::F64,
        &Device::Cpu
    )
    .is_err());
}

/// The shared op tensors of `genotype`'s path: `<cell>.comb_iter_<b>_<side>.<op>.` prefixes.
fn placed_ops(net: &Supernet, genotype: &Genotype) -> HashSet<String> {
    let child = net.child(genotype).unwrap();
    let mut out = HashSet::new();
    for cell in child.cell_names() {
        let role = if cell.starts_with("reduction") {
            CellRole::Reduction
        } else {
            CellRole::Normal
        };
        for (b, block) in genotype.cell(role).blocks.iter().enumerate() {
            for (s, side) in ["left", "right"].iter().enumerate() {
                out.insert(format!(
                    "{cell}.comb_iter_{b}_{side}.{}.",
                    block.ops[s].name()
                ));
            }
        }
    }
    out
}

#[test]
fn ops_off_the_sampled_path_get_no_gradient() {
    let space = sharing_space(&SearchSpace::nasnet());
    let net = supernet(&space);
    let genotype = space.sample(&mut ChaCha8Rng::seed_from_u64(4));
    let child = net.child(&genotype).unwrap();
    let loss = child
        .forward_t(&input(1), true)
        .unwrap()
        .logits
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let placed = placed_ops(&net, &genotype);
    let (mut on_path, mut off_path) = (0, 0);
    for (name, var) in net.vars() {
        let Some(i) = name.find(".comb_iter_") else {
            continue;
        };
        if name.contains("_norm.")
            || name.ends_with("running_mean")
            || name.ends_with("running_var")
        {
            continue;
        }
        // `<cell>.comb_iter_<b>_<side>.<op>.`: the prefix up to the op's name.
        let rest = &name[i + 1..];
        let mut parts = rest.splitn(3, '.');
        let prefix = format!(
            "{}.{}.{}.",
            &name[..i],
            parts.next().unwrap(),
            parts.next().unwrap()
        );
        let grad = grads.get(var.as_tensor());
        if placed.contains(&prefix) {
            on_path += 1;
            // Some variant of a placed op is on the path; the others are not, so only count.
            continue;
        }
        off_path += 1;
        assert!(
            grad.is_none(),
            "`{name}` is off the path but has a gradient"
        );
    }
    assert!(
        on_path > 0 && off_path > on_path,
        "{on_path} on, {off_path} off"
    );
    // Slices of the weights reading a cell's output: only the states the cell outputs.
    let concat = &genotype.normal.concat;
    for (name, var) in net.vars() {
        if let Some(j) = name.strip_prefix("cell_6.conv_1x1.conv.weight_from_") {
            let j: usize = j.parse().unwrap();
            // cell_6 reads reduction_cell_0's output.
            let used = genotype.reduction.concat.contains(&j);
            assert_eq!(grads.get(var.as_tensor()).is_some(), used, "{name}");
        }
        if let Some(j) = name.strip_prefix("last_linear.weight_from_") {
            let j: usize = j.parse().unwrap();
            assert_eq!(
                grads.get(var.as_tensor()).is_some(),
                concat.contains(&j),
                "{name}"
            );
        }
    }
}
