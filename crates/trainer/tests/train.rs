//! The training loop end to end on tiny NASNet-A models and small slices of the embedded
//! Fashion-MNIST subset: the loss falls, a killed run resumes where its checkpoint left off
//! (epoch ends and mid-epoch), crashes during a save leave a loadable checkpoint, wrong
//! checkpoints and divergence are typed errors.
#![cfg(feature = "embedded")]

use std::path::Path;

use candle_core::{Device, Tensor};
use nasnet_cells::durable::write_synced;
use nasnet_cells::NasNetConfig;
use nasnet_trainer::checkpoint::{varmap_tensors, METRICS_FILE, STATE_FILE};
use nasnet_trainer::progress::{ProgressHook, Quiet, StepInfo};
use nasnet_trainer::{
    fit_model_config, load_checkpoint, CheckpointState, DataConfig, DataSource, Dataset, Splits,
    TestEval, TrainConfig, TrainError, Trainer, Weights,
};

/// Serialises the tests of this file: each already uses every core, and candle's spinning
/// thread pool slows down badly when oversubscribed.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Thread pools and malloc as the `nasnet` binary sets them, before the first candle op of
    // the process, while the other tests wait on the lock.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (name, value) in nasnet_cells::candle_thread_env() {
            std::env::set_var(name, value);
        }
        nasnet_cells::configure_cpu();
    });
    guard
}

/// `d` at half resolution (2x2 means), so the tiny models below train four times faster.
fn half(d: &Dataset) -> Dataset {
    let (h, w) = (d.height / 2, d.width / 2);
    let mut images = Vec::with_capacity(d.len() * h * w);
    for i in 0..d.len() {
        let img = d.image(i);
        for y in 0..h {
            for x in 0..w {
                let s: u32 = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .iter()
                    .map(|(dy, dx)| u32::from(img[(2 * y + dy) * d.width + 2 * x + dx]))
                    .sum();
                images.push((s / 4) as u8);
            }
        }
    }
    Dataset::new(
        &d.name,
        images,
        d.labels.clone(),
        d.class_names.clone(),
        1,
        h,
        w,
    )
    .unwrap()
}

/// 128 training, 64 validation and 128 test images of the embedded set, at 14x14.
fn splits() -> Splits {
    let (train, test) = nasnet_trainer::readers::embedded().unwrap();
    let mut cfg = DataConfig::new(DataSource::Embedded);
    cfg.val_size = 64;
    cfg.train_limit = Some(128);
    cfg.test_limit = Some(128);
    let small = Splits::from_sets(train, Some(test), &cfg).unwrap();
    let val = small.val.as_ref().map(|v| half(v));
    let test = half(&small.test);
    let train = half(&small.train);
    let norm = train.norm.clone();
    let with_norm = |mut d: Dataset| {
        d.norm = norm.clone();
        std::sync::Arc::new(d)
    };
    Splits {
        val: val.map(with_norm),
        test: with_norm(test),
        train: std::sync::Arc::new(train),
    }
}

/// NASNet-A 1@96 (N = 1, F = 4), CIFAR stem, no aux head, no drop path.
fn model_cfg(s: &Splits) -> NasNetConfig {
    let mut m = NasNetConfig::cifar(1, 96).unwrap().with_aux_head(false);
    m.drop_path_keep_prob = 1.0;
    fit_model_config(m, &s.train)
}

fn train_cfg(epochs: usize) -> TrainConfig {
    let mut c = TrainConfig::quick(epochs);
    c.batch_size = 32;
    c.eval_batch_size = 128;
    c.sgd.lr = 0.1;
    c
}

fn genotype() -> nasnet_searchspace::Genotype {
    nasnet_searchspace::named::nasnet_a()
}

/// Stops the run after `at` global steps; records the steps at which checkpoints were written.
struct StopAt {
    at: usize,
    now: usize,
    checkpoints: Vec<usize>,
}

impl StopAt {
    fn new(at: usize) -> Self {
        StopAt {
            at,
            now: 0,
            checkpoints: Vec::new(),
        }
    }
}

impl ProgressHook for StopAt {
    fn on_step(&mut self, s: &StepInfo) {
        self.now = s.global_step;
    }
    fn on_checkpoint(&mut self, _dir: &Path, step: usize) {
        self.checkpoints.push(step);
    }
    fn should_stop(&mut self) -> bool {
        self.now >= self.at
    }
}

fn state(dir: &Path) -> CheckpointState {
    serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).unwrap()).unwrap()
}

fn metrics_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(METRICS_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn training_lowers_the_loss() {
    let _serial = serial();
    let s = splits();
    let m = model_cfg(&s);
    let mut t = Trainer::new(&genotype(), &m, &train_cfg(3), &Device::Cpu).unwrap();
    let before = t.evaluate(&s.test).unwrap();
    let summary = t.train(&s, &mut Quiet).unwrap();
    let after = t.evaluate(&s.test).unwrap();
    assert_eq!(summary.steps, 3 * 4);
    assert_eq!(summary.history.len(), 3);
    let h = &summary.history;
    assert!(h[2].train_loss < h[0].train_loss, "{h:?}");
    assert!(
        after.loss < before.loss,
        "test loss {} -> {}",
        before.loss,
        after.loss
    );
    // Chance is 10 % (12 steps on 128 images at 14x14 reach 30-40 %).
    assert!(after.accuracy > 0.2, "test accuracy {}", after.accuracy);
    assert!(h
        .iter()
        .all(|m| m.val_acc.is_some() && m.test_acc.is_some()));
    assert_eq!(h[2].test_acc, Some(after.accuracy));
}

#[test]
fn stop_and_resume_at_an_epoch_end() {
    let _serial = serial();
    let s = splits();
    let m = model_cfg(&s);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut t = Trainer::new(&genotype(), &m, &train_cfg(2), &Device::Cpu)
        .unwrap()
        .with_output_dir(&out)
        .unwrap();
    // Stop after the first epoch (4 steps), as a kill right after its checkpoint would.
    let err = t.train(&s, &mut StopAt::new(4)).unwrap_err();
    assert!(matches!(err, TrainError::Stopped { step: 4 }), "{err:?}");
    let st = state(&out);
    assert_eq!((st.epoch, st.step, st.history.len()), (1, 4, 1));
    assert_eq!(metrics_lines(&out).len(), 1);
    let saved = varmap_tensors(t.varmap());
    drop(t);

    // A fresh trainer refuses to overwrite the checkpoint.
    let fresh = Trainer::new(&genotype(), &m, &train_cfg(2), &Device::Cpu).unwrap();
    assert!(matches!(
        fresh.with_output_dir(&out),
        Err(TrainError::Config(_))
    ));

    let mut r = Trainer::resume(&out, &Device::Cpu).unwrap();
    assert_eq!((r.epoch(), r.step()), (1, 4));
    // The resumed model is the saved one, BN running statistics included.
    let restored: std::collections::HashMap<String, Tensor> =
        varmap_tensors(r.varmap()).into_iter().collect();
    for (name, t) in &saved {
        let diff = (t - &restored[name])
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name}");
    }
    let summary = r.train(&s, &mut Quiet).unwrap();
    assert_eq!(summary.steps, 8);
    assert_eq!(summary.history.len(), 2);
    let st = state(&out);
    assert_eq!((st.epoch, st.step, st.partial.seen), (2, 8, 0));
    let lines = metrics_lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["epoch"], 2);
    assert_eq!(lines[1]["step"], 8);
    for key in [
        "lr",
        "train_loss",
        "train_acc",
        "val_acc",
        "test_acc",
        "images_per_sec",
        "seconds",
    ] {
        assert!(lines[1][key].is_number(), "{key} missing in {}", lines[1]);
    }
    // The best model is loadable and its record matches.
    let best = load_checkpoint(&out, &Device::Cpu, Weights::Best).unwrap();
    assert!(best.state.best.is_some());
    // Only one trainer at a time may own the folder.
    let err = Trainer::resume(&out, &Device::Cpu).err().unwrap();
    assert!(
        err.to_string().contains("in use by another training run"),
        "{err}"
    );
    drop(r);
    // Resuming a finished run trains nothing more.
    let mut again = Trainer::resume(&out, &Device::Cpu).unwrap();
    assert_eq!(again.train(&s, &mut Quiet).unwrap().steps, 8);

    // The same run in one go: same steps, same metrics lines, same files.
    let one_go = dir.path().join("one-go");
    let mut t = Trainer::new(&genotype(), &m, &train_cfg(2), &Device::Cpu)
        .unwrap()
        .with_output_dir(&one_go)
        .unwrap();
    assert_eq!(t.train(&s, &mut Quiet).unwrap().steps, 8);
    // Seeded initialisation, data order and drop path: the interrupted and resumed run ends
    // with exactly the weights of the run in one go.
    let resumed: std::collections::HashMap<String, Tensor> =
        varmap_tensors(again.varmap()).into_iter().collect();
    for (name, w) in varmap_tensors(t.varmap()) {
        let diff = (&w - &resumed[&name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(
            diff.to_scalar::<f32>().unwrap(),
            0.0,
            "{name} differs after resume"
        );
    }
    let (a, b) = (state(&one_go), state(&out));
    assert_eq!(
        (a.epoch, a.step, a.history.len()),
        (b.epoch, b.step, b.history.len())
    );
    assert_eq!(metrics_lines(&one_go).len(), metrics_lines(&out).len());
    let files = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(files(&one_go), files(&out));
    assert_eq!(
        files(&out),
        vec![
            "best.json",
            "best.safetensors",
            "lock",
            "metrics.jsonl",
            "model.safetensors",
            "optimizer.safetensors",
            "state.json"
        ]
    );
}

#[test]
fn mid_epoch_checkpoint_resumes_the_same_batches() {
    let _serial = serial();
    let s = splits();
    let m = model_cfg(&s);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = train_cfg(2);
    cfg.checkpoint_every_steps = Some(3);
    let mut t = Trainer::new(&genotype(), &m, &cfg, &Device::Cpu)
        .unwrap()
        .with_output_dir(dir.path())
        .unwrap();
    // Stopped after step 6 (epoch 2, batch 2): saved mid-epoch with the epoch's partial sums.
    let mut hook = StopAt::new(6);
    let err = t.train(&s, &mut hook).unwrap_err();
    assert!(matches!(err, TrainError::Stopped { step: 6 }), "{err:?}");
    // Every 3 steps, at the epoch end (4), and at the stop (6, also a multiple of 3).
    assert_eq!(hook.checkpoints, vec![3, 4, 6]);
    let st = state(dir.path());
    assert_eq!((st.epoch, st.step, st.partial.seen), (1, 6, 2 * 32));
    assert_eq!(metrics_lines(dir.path()).len(), 1);
    drop(t); // releases the folder's lock, as a killed process would
    let mut r = Trainer::resume(dir.path(), &Device::Cpu).unwrap();
    let summary = r.train(&s, &mut Quiet).unwrap();
    assert_eq!(summary.steps, 8);
    let st = state(dir.path());
    assert_eq!((st.epoch, st.step, st.partial.seen), (2, 8, 0));
    assert_eq!(metrics_lines(dir.path()).len(), 2);
}

#[test]
fn crash_during_a_save_leaves_a_loadable_checkpoint() {
    let _serial = serial();
    let s = splits();
    let m = model_cfg(&s);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = train_cfg(1);
    cfg.test_eval = TestEval::Never;
    let mut t = Trainer::new(&genotype(), &m, &cfg, &Device::Cpu)
        .unwrap()
        .with_output_dir(dir.path())
        .unwrap();
    t.train(&s, &mut Quiet).unwrap();
    drop(t);
    // A crash while writing the next checkpoint: temp files half written, no commit record.
    write_synced(&dir.path().join("model.safetensors.tmp"), b"partial").unwrap();
    write_synced(&dir.path().join("state.json.tmp"), b"{\"format\": 1, \"ep").unwrap();
    let r = Trainer::resume(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(r.step(), 4);
    assert!(!dir.path().join("model.safetensors.tmp").exists());
    assert!(!dir.path().join("state.json.tmp").exists());
    let loaded = load_checkpoint(dir.path(), &Device::Cpu, Weights::Last).unwrap();
    let acc = nasnet_trainer::evaluate(&loaded.model, &s.test, &Device::Cpu, 64).unwrap();
    assert_eq!(acc.images, 128);
}

#[test]
fn checkpoint_of_another_shape_names_the_tensor() {
    let _serial = serial();
    let s = splits();
    let m = model_cfg(&s);
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(&genotype(), &m, &train_cfg(1), &Device::Cpu)
        .unwrap()
        .with_output_dir(dir.path())
        .unwrap();
    t.train(&s, &mut Quiet).unwrap();
    drop(t);
    // Edit the saved config to a wider model: the weights no longer fit.
    let mut st = state(dir.path());
    st.model_config.filters = 8;
    st.model_config.stem_filters = 24;
    std::fs::write(
        dir.path().join(STATE_FILE),
        serde_json::to_vec(&st).unwrap(),
    )
    .unwrap();
    let err = Trainer::resume(dir.path(), &Device::Cpu).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err:?}");
    assert!(
        msg.contains("tensor `") && msg.contains("has shape"),
        "{msg}"
    );

    // A damaged weight file is caught by its checksum.
    let mut st = state(dir.path());
    st.model_config.filters = 4;
    st.model_config.stem_filters = 12;
    std::fs::write(
        dir.path().join(STATE_FILE),
        serde_json::to_vec(&st).unwrap(),
    )
    .unwrap();
    let model = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&model, bytes).unwrap();
    let err = Trainer::resume(dir.path(), &Device::Cpu).err().unwrap();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn divergence_is_a_typed_error() {
    let _serial = serial();
    let s = splits();
    let m = model_cfg(&s);
    let mut cfg = train_cfg(1);
    cfg.sgd.lr = 1e30;
    cfg.sgd.clip_norm = None;
    let mut t = Trainer::new(&genotype(), &m, &cfg, &Device::Cpu).unwrap();
    let err = t.train(&s, &mut Quiet).unwrap_err();
    assert!(matches!(err, TrainError::Diverged { .. }), "{err:?}");
}

#[test]
fn an_exploding_finite_loss_is_divergence_in_epoch_one() {
    let _serial = serial();
    let s = splits();
    let m = model_cfg(&s);
    let mut cfg = train_cfg(2);
    // With clipping on, a huge rate gives finite but exploded losses before any NaN.
    cfg.sgd.lr = 1e6;
    let mut t = Trainer::new(&genotype(), &m, &cfg, &Device::Cpu).unwrap();
    match t.train(&s, &mut Quiet).unwrap_err() {
        TrainError::Diverged {
            epoch, divergence, ..
        } => {
            assert_eq!(epoch, 1);
            assert!(divergence.loss.is_nan() || divergence.loss > divergence.limit);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn a_resume_on_other_data_names_what_differs() {
    let _serial = serial();
    let s = splits();
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(&genotype(), &model_cfg(&s), &train_cfg(2), &Device::Cpu)
        .unwrap()
        .with_output_dir(dir.path())
        .unwrap();
    assert!(t.train(&s, &mut StopAt::new(4)).is_err());
    drop(t);
    // Same counts and shapes, other class names: only the names may be reported.
    let mut renamed = (*s.train).clone();
    renamed.class_names[0] = "renamed".into();
    let other = Splits {
        train: std::sync::Arc::new(renamed),
        ..s.clone()
    };
    let mut t = Trainer::resume(dir.path(), &Device::Cpu).unwrap();
    let err = t.train(&other, &mut Quiet).unwrap_err().to_string();
    assert!(err.contains("class names: [\"renamed\""), "{err}");
    assert!(!err.contains("training images"), "{err}");
}

#[test]
fn mismatched_data_and_settings_are_config_errors() {
    let _serial = serial();
    let s = splits();
    let mut m = model_cfg(&s);
    m.num_classes = 7;
    let mut t = Trainer::new(&genotype(), &m, &train_cfg(1), &Device::Cpu).unwrap();
    assert!(matches!(
        t.train(&s, &mut Quiet),
        Err(TrainError::Config(_))
    ));
    let m = model_cfg(&s);
    let mut cfg = train_cfg(1);
    cfg.batch_size = 1000;
    let mut t = Trainer::new(&genotype(), &m, &cfg, &Device::Cpu).unwrap();
    assert!(matches!(
        t.train(&s, &mut Quiet),
        Err(TrainError::Config(_))
    ));
    cfg.epochs = 0;
    assert!(Trainer::new(&genotype(), &m, &cfg, &Device::Cpu).is_err());
}

/// NASNet-A 1@192 with the ImageNet stem (conv0 of 8 filters, two stem reduction cells) and its
/// dense dropout (keep 0.5), fitted to the data.
fn imagenet_cfg(s: &Splits) -> NasNetConfig {
    let size = nasnet_cells::NetSize {
        cells_per_stack: 1,
        filters: 8,
    };
    let m = NasNetConfig::imagenet(size, 0.25, 14);
    assert!(m.dense_dropout_keep_prob < 1.0);
    fit_model_config(m, &s.train)
}

fn file_bytes(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

/// ImageNet-stem training, dense dropout on, stopped after a mid-epoch checkpoint (as a kill
/// would) and resumed, ends byte for byte as the run in one go (the dropout masks came from
/// candle's unseeded generator, so the two differed from the first step).
#[test]
fn an_imagenet_stem_run_resumed_ends_as_the_run_in_one_go() {
    let _serial = serial();
    let s = splits();
    let m = imagenet_cfg(&s);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = train_cfg(2);
    cfg.checkpoint_every_steps = Some(3);
    let new_run = |out: &Path| {
        Trainer::new(&genotype(), &m, &cfg, &Device::Cpu)
            .unwrap()
            .with_output_dir(out)
            .unwrap()
    };
    let resumed = dir.path().join("resumed");
    let mut t = new_run(&resumed);
    let err = t.train(&s, &mut StopAt::new(6)).unwrap_err();
    assert!(matches!(err, TrainError::Stopped { step: 6 }), "{err:?}");
    drop(t); // releases the folder's lock, as a killed process would
    let mut r = Trainer::resume(&resumed, &Device::Cpu).unwrap();
    assert_eq!(r.train(&s, &mut Quiet).unwrap().steps, 8);
    drop(r);

    let one_go = dir.path().join("one-go");
    assert_eq!(new_run(&one_go).train(&s, &mut Quiet).unwrap().steps, 8);
    for file in ["model.safetensors", "optimizer.safetensors"] {
        assert!(
            file_bytes(&resumed, file) == file_bytes(&one_go, file),
            "{file} differs after resume"
        );
    }
    let losses = |d: &Path| -> Vec<serde_json::Value> {
        metrics_lines(d)
            .iter()
            .map(|l| l["train_loss"].clone())
            .collect()
    };
    assert_eq!(losses(&resumed), losses(&one_go));
}

/// Two runs of the same seeded fine-tune of an ImageNet-stem checkpoint, whole model or
/// frozen backbone (the classifier's dropout run by the trainer), end with the same weights.
#[test]
fn two_runs_of_a_seeded_fine_tune_are_equal() {
    let _serial = serial();
    let s = splits();
    let m = imagenet_cfg(&s);
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("pretrained.safetensors");
    let mut pretraining = train_cfg(1);
    pretraining.seed = 99;
    let start = Trainer::new(&genotype(), &m, &pretraining, &Device::Cpu).unwrap();
    let tensors: std::collections::HashMap<String, Tensor> =
        varmap_tensors(start.varmap()).into_iter().collect();
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    for freeze_backbone in [false, true] {
        let fine_tune = |name: &str| {
            let out = dir.path().join(format!("{name}-{freeze_backbone}"));
            let cfg = train_cfg(1);
            let device = &Device::Cpu;
            let mut t = Trainer::fine_tune(
                &genotype(),
                &m,
                &cfg,
                device,
                tensors.clone(),
                &weights,
                freeze_backbone,
            )
            .unwrap()
            .with_output_dir(&out)
            .unwrap();
            t.train(&s, &mut Quiet).unwrap();
            file_bytes(&out, "model.safetensors")
        };
        assert!(
            fine_tune("first") == fine_tune("second"),
            "two fine-tunes (freeze_backbone {freeze_backbone}) differ"
        );
    }
}
