//! The compiled evaluation path (`NasNet::compile`) against the PyTorch ports' stored eval
//! outputs (logits and every recorded feature, with the README's f32 tolerance) and against the
//! reference path (`forward_t(x, false)`) on random genotypes of the three search spaces, every
//! op in both roles, every combine, several batch and image sizes, and repeated calls (buffers
//! reused across shapes).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nasnet_cells::reference::{relative_l2, Tolerances};
use nasnet_cells::{NasNet, NasNetConfig, NetSize};
use nasnet_searchspace::{Combine, Genotype, Op, SearchSpace};

mod common;
use common::{fixture, uniform_cell};
use rand::SeedableRng;

/// Relative L2 the compiled path may differ from the reference by, in f32 (the README's eval
/// tolerance: summation order and folded batch norms change the rounding only).
fn tolerance() -> f64 {
    Tolerances::for_dtype(DType::F32).eval_rel
}

fn check_fixture(name: &str) {
    let dir = fixture(name);
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cfg = NasNetConfig::from_fixture_config(&config).unwrap();
    let model = NasNet::from_file(
        &nasnet_searchspace::named::nasnet_a(),
        &cfg,
        dir.join("weights.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let io = candle_core::safetensors::load(dir.join("io.safetensors"), &Device::Cpu).unwrap();
    let input = io["input"].to_dtype(DType::F32).unwrap();
    let compiled = model.compile().unwrap();
    let logits = compiled.forward(&input).unwrap();
    let err = relative_l2(&logits, &io["logits"]).unwrap();
    assert!(err <= tolerance(), "{name}: logits off by {err:e}");
    let features = compiled.forward_features(&input).unwrap();
    let modules = config["feature_modules"].as_array().unwrap();
    assert!(!modules.is_empty());
    for module in modules {
        let module = module.as_str().unwrap();
        let found = &features.iter().find(|(n, _)| n == module).unwrap().1;
        let err = relative_l2(found, &io[&format!("features.{module}")]).unwrap();
        assert!(err <= tolerance(), "{name}: {module} off by {err:e}");
    }
    // The plan for logits alone reuses buffers: asking again after features gives the same.
    let again = compiled.forward(&input).unwrap();
    assert_eq!(relative_l2(&again, &logits).unwrap(), 0.0);
}

#[test]
fn mobile_fixture() {
    check_fixture("nasnet-a-mobile-tiny");
}

#[test]
fn large_fixture() {
    check_fixture("nasnet-a-large-tiny");
}

/// A random-weight model with random running statistics, so folded batch norms are not
/// identities.
fn random_model(genotype: &Genotype, cfg: &NasNetConfig, seed: u64) -> NasNet {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = NasNet::new(genotype, cfg, vb).unwrap();
    model.seed(&varmap, seed).unwrap();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let shape = var.shape().clone();
        let t = if name.ends_with("running_var") || name.ends_with(".weight") && var.rank() == 1 {
            Tensor::rand(0.5f32, 1.5, shape, &Device::Cpu)
        } else if name.ends_with("running_mean") || name.ends_with(".bias") {
            Tensor::randn(0f32, 0.3, shape, &Device::Cpu)
        } else {
            continue;
        };
        var.set(&t.unwrap()).unwrap();
    }
    model
}

/// The compiled logits and features equal the reference's for `x`.
fn assert_same(model: &NasNet, x: &Tensor, what: &str) {
    let compiled = model.compile().unwrap();
    let want = model.forward_t(x, false).unwrap().logits;
    let got = compiled.forward(x).unwrap();
    let err = relative_l2(&got, &want).unwrap();
    assert!(err <= tolerance(), "{what}: logits off by {err:e}");
    let want = model.forward_features(x, false).unwrap();
    let got = compiled.forward_features(x).unwrap();
    assert_eq!(got.len(), want.len(), "{what}");
    for ((gn, g), (wn, w)) in got.iter().zip(&want) {
        assert_eq!(gn, wn, "{what}");
        let err = relative_l2(g, w).unwrap();
        assert!(err <= tolerance(), "{what}: {gn} off by {err:e}");
    }
}

fn tiny_config(size: usize) -> NasNetConfig {
    NasNetConfig::cifar_size(NetSize {
        cells_per_stack: 1,
        filters: 4,
    })
    .with_image_size(size)
}

fn input(n: usize, size: usize) -> Tensor {
    Tensor::randn(0f32, 1f32, (n, 3, size, size), &Device::Cpu).unwrap()
}

#[test]
fn random_genotypes_of_the_three_spaces() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261130);
    let cfg = tiny_config(16);
    for (space, count) in [
        (SearchSpace::nasnet(), 10),
        (SearchSpace::nasnet_b(), 6),
        (SearchSpace::nasnet_c(), 6),
    ] {
        for i in 0..count {
            let g = space.sample(&mut rng);
            let model = random_model(&g, &cfg, i as u64);
            let what = format!("{:?} sample {i}: {g:?}", space.output_rule);
            assert_same(&model, &input(2, 16), &what);
        }
    }
}

#[test]
fn every_op_and_combine_in_both_roles() {
    for op in Op::ALL {
        for combine in [Combine::Add, Combine::Concat] {
            let g = Genotype {
                normal: uniform_cell(op, combine),
                reduction: uniform_cell(op, Combine::Concat),
            };
            let model = random_model(&g, &tiny_config(12), 3);
            assert_same(&model, &input(1, 12), op.name());
        }
    }
    for combine in Combine::ALL {
        let g = Genotype {
            normal: uniform_cell(Op::SepConv3x3, combine),
            reduction: uniform_cell(Op::MaxPool3x3, combine),
        };
        let model = random_model(&g, &tiny_config(12), 4);
        assert_same(&model, &input(2, 12), combine.name());
    }
}

#[test]
fn imagenet_stem_odd_sizes_and_changing_shapes() {
    let mut cfg = NasNetConfig::mobile();
    cfg.stem_filters = 8;
    cfg.filters = 8;
    cfg.num_classes = 7;
    let model = random_model(&nasnet_searchspace::named::nasnet_a(), &cfg, 9);
    for (n, size) in [(1, 35), (3, 29), (1, 35)] {
        assert_same(&model, &input(n, size), &format!("mobile-like {n}x{size}"));
    }
}

#[test]
fn a_compiled_model_is_a_snapshot_and_says_so() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = tiny_config(16);
    let model = NasNet::new(&nasnet_searchspace::named::nasnet_a(), &cfg, vb).unwrap();
    model.seed(&varmap, 1).unwrap();
    let compiled = model.compile().unwrap();
    assert!(compiled.is_current(&model).unwrap());
    model.seed(&varmap, 2).unwrap();
    assert!(!compiled.is_current(&model).unwrap());
    assert!(model.compile().unwrap().is_current(&model).unwrap());
}
