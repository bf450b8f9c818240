//! The shared-weights trainer: an SGD step (momentum, weight decay) moves only the ops of the
//! sampled child, and a trainer restored from a save continues bit for bit.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use nasnet_cells::{parse_net, sharing_space};
use nasnet_searchspace::{CellRole, Genotype, SearchSpace};
use nasnet_trainer::{DataConfig, DataSource, SharedSpec, SharedTrainer, Splits};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn splits() -> Splits {
    let mut data = DataConfig::new(DataSource::Embedded);
    data.val_size = 64;
    data.train_limit = Some(128);
    Splits::load(&data).unwrap()
}

fn trainer(space: &SearchSpace, splits: &Splits) -> SharedTrainer {
    let spec = SharedSpec {
        net: parse_net("1@48").unwrap(),
        batch_size: 16,
        eval_batch_size: 32,
        lr: 0.05,
        min_lr: 0.0005,
        weight_decay: 1e-4,
        seed: 9,
    };
    SharedTrainer::new(space, &spec, splits, 10, &Device::Cpu).unwrap()
}

fn snapshot(t: &SharedTrainer) -> HashMap<String, Vec<f32>> {
    t.supernet()
        .vars()
        .into_iter()
        .map(|(k, v)| {
            let flat: Tensor = v.as_tensor().flatten_all().unwrap();
            (k, flat.to_vec1::<f32>().unwrap())
        })
        .collect()
}

/// `<cell>.comb_iter_<b>_<side>.<op>.` of every op `genotype` places.
fn placed(t: &SharedTrainer, genotype: &Genotype) -> Vec<String> {
    let child = t.supernet().child(genotype).unwrap();
    let mut out = Vec::new();
    for cell in child.cell_names() {
        let role = if cell.starts_with("reduction") {
            CellRole::Reduction
        } else {
            CellRole::Normal
        };
        for (b, block) in genotype.cell(role).blocks.iter().enumerate() {
            for (s, side) in ["left", "right"].iter().enumerate() {
                out.push(format!(
                    "{cell}.comb_iter_{b}_{side}.{}.",
                    block.ops[s].name()
                ));
            }
        }
    }
    out
}

fn is_op(name: &str) -> bool {
    name.contains(".comb_iter_") && !name.contains("_norm.")
}

#[test]
fn sgd_steps_move_only_the_sampled_paths_ops() {
    let space = sharing_space(&SearchSpace::nasnet());
    let splits = splits();
    let mut t = trainer(&space, &splits);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let first = space.sample(&mut rng);
    let second = space.sample(&mut rng);
    let before = snapshot(&t);
    t.train_step(&first, 0).unwrap();
    let after_first = snapshot(&t);
    t.train_step(&second, 1).unwrap();
    let after_second = snapshot(&t);
    let on_first = placed(&t, &first);
    let on_second = placed(&t, &second);
    let on = |paths: &[String], name: &str| paths.iter().any(|p| name.starts_with(p.as_str()));
    let (mut moved, mut still) = (0, 0);
    for (name, old) in &before {
        if !is_op(name) {
            continue;
        }
        if !on(&on_first, name) {
            assert_eq!(old, &after_first[name], "`{name}` moved in step 1");
            still += 1;
        } else if !name.ends_with("running_mean") && !name.ends_with("running_var") {
            moved += usize::from(old != &after_first[name]);
        }
        if !on(&on_first, name) && !on(&on_second, name) {
            assert_eq!(old, &after_second[name], "`{name}` moved in step 2");
        }
        // The first child's ops keep their momentum but get no gradient in step 2: still.
        if on(&on_first, name) && !on(&on_second, name) {
            assert_eq!(
                after_first[name], after_second[name],
                "`{name}` moved in step 2"
            );
        }
    }
    assert!(moved > 0 && still > moved, "{moved} moved, {still} still");
}

#[test]
fn a_restored_trainer_continues_bit_for_bit() {
    let space = sharing_space(&SearchSpace::nasnet());
    let splits = splits();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let children: Vec<Genotype> = (0..3).map(|_| space.sample(&mut rng)).collect();
    let dir = std::env::temp_dir().join(format!("nasnet-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let mut a = trainer(&space, &splits);
    a.train_step(&children[0], 0).unwrap();
    a.train_step(&children[1], 1).unwrap();
    a.save(&dir).unwrap();
    a.train_step(&children[2], 2).unwrap();

    let mut b = trainer(&space, &splits);
    b.load(&dir).unwrap();
    b.train_step(&children[2], 2).unwrap();
    assert_eq!(snapshot(&a), snapshot(&b));
    assert_eq!(
        a.reward(&children[0], 4).unwrap(),
        b.reward(&children[0], 4).unwrap()
    );
    let r = a.validate(&children[1]).unwrap();
    assert!((0.0..=1.0).contains(&r));
    std::fs::remove_dir_all(&dir).unwrap();
}
