//! Every op in both roles, and many random genotypes of the three search spaces (NASNet, -B with
//! its all-states rule and normalising combines, -C), become trainable networks: a train-mode
//! forward and backward pass on a tiny CIFAR-stem net gives the right shapes, finite values and
//! a gradient for every trainable tensor.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nasnet_cells::{NasNet, NasNetConfig, NetSize};
use nasnet_searchspace::{Block, Cell, Combine, Genotype, Op, SearchSpace};

mod common;
use common::uniform_cell;
use rand::SeedableRng;

const BATCH: usize = 2;
const SIZE: usize = 16;

fn tiny_config() -> NasNetConfig {
    let mut cfg = NasNetConfig::cifar_size(NetSize {
        cells_per_stack: 1,
        filters: 4,
    })
    .with_image_size(SIZE)
    .with_aux_head(true);
    cfg.drop_path_keep_prob = 0.6;
    cfg.dense_dropout_keep_prob = 0.5;
    cfg
}

/// Builds, runs forward and backward, and checks shapes, finiteness and gradients.
fn exercise(genotype: &Genotype, what: &str) {
    let cfg = tiny_config();
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let model = NasNet::new(genotype, &cfg, vb).unwrap_or_else(|e| panic!("{what}: {e}"));
    model.set_drop_path_progress(1.0);
    let x = Tensor::randn(0f32, 1f32, (BATCH, 3, SIZE, SIZE), &dev).unwrap();
    let out = model.forward_t(&x, true).unwrap();
    assert_eq!(out.logits.dims(), &[BATCH, cfg.num_classes], "{what}");
    let aux = out.aux_logits.as_ref().expect("aux head in training");
    assert_eq!(aux.dims(), &[BATCH, cfg.num_classes], "{what}");
    let labels = Tensor::new(&[1u32, 7], &dev).unwrap();
    let loss = (candle_nn::loss::cross_entropy(&out.logits, &labels).unwrap()
        + (candle_nn::loss::cross_entropy(aux, &labels).unwrap() * 0.4).unwrap())
    .unwrap();
    let loss_value = loss.to_scalar::<f32>().unwrap();
    assert!(loss_value.is_finite(), "{what}: loss {loss_value}");
    let grads = loss.backward().unwrap();
    let vars = varmap.data().lock().unwrap().clone();
    let mut trainable = 0;
    for p in model.params().iter().filter(|p| p.trainable) {
        trainable += 1;
        let var = vars
            .get(&p.name)
            .unwrap_or_else(|| panic!("{what}: no var {}", p.name));
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: no gradient for {}", p.name));
        assert_eq!(g.dims(), var.dims(), "{what}: {}", p.name);
        let s = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(s.is_finite(), "{what}: non-finite gradient for {}", p.name);
    }
    assert!(trainable > 0);
    // Eval mode: features have the channel counts the builder reports, logits are finite.
    let feats = model.forward_features(&x, false).unwrap();
    assert_eq!(feats.len(), model.cell_names().len() + 1, "{what}");
    let logits = model.forward_t(&x, false).unwrap();
    assert!(
        logits.aux_logits.is_none(),
        "{what}: aux logits in eval mode"
    );
    let v: Vec<f32> = logits.logits.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|a| a.is_finite()), "{what}: eval logits");
    let (_, _, h, _) = feats.last().unwrap().1.dims4().unwrap();
    assert_eq!(h, SIZE / 4, "{what}: two reductions");
}

#[test]
fn every_op_in_both_roles() {
    for op in Op::ALL {
        let g = Genotype {
            normal: uniform_cell(op, Combine::Add),
            reduction: uniform_cell(op, Combine::Concat),
        };
        exercise(&g, op.name());
    }
}

#[test]
fn every_combine() {
    for combine in Combine::ALL {
        let g = Genotype {
            normal: uniform_cell(Op::SepConv3x3, combine),
            reduction: uniform_cell(Op::MaxPool3x3, combine),
        };
        exercise(&g, combine.name());
    }
}

#[test]
fn outputs_that_are_cell_inputs() {
    // State 0 and 1 in the output list: in the reduction cell they need a stride-2 factorized
    // reduction; in the first CIFAR cell state 1 is the 3F-filter stem output.
    let cell = Cell {
        blocks: vec![Block::add(0, Op::Identity, 1, Op::AvgPool3x3)],
        concat: vec![0, 1, 2],
    };
    let g = Genotype {
        normal: cell.clone(),
        reduction: cell,
    };
    exercise(&g, "inputs in the output list");
}

#[test]
fn named_architectures() {
    for arch in nasnet_searchspace::named::NAMED {
        exercise(&(arch.build)(), arch.name);
    }
}

#[test]
fn random_genotypes() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20180418);
    for (space, n) in [
        (SearchSpace::nasnet(), 12),
        (SearchSpace::nasnet_b(), 8),
        (SearchSpace::nasnet_c(), 8),
    ] {
        for i in 0..n {
            let g = space.sample(&mut rng);
            exercise(&g, &format!("{:?} sample {i}: {g:?}", space.output_rule));
        }
    }
}
