//! Writes the seed corpus (`corpus/<target>/`) from the project's own writers: named genotypes,
//! slices of the embedded Fashion-MNIST IDX files, CIFAR records, tiny PNG and JPEG images, a
//! checkpoint the trainer saved after one epoch of a tiny model, and run folders of short searches.
//!
//! `cargo run --release --example make_corpus` (from `fuzz/`); deterministic except for the
//! wall times recorded in checkpoints and trial records.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use nasnet_controller::search_loop::{run_search, FnBackend, RunDir, TrialOutcome};
use nasnet_controller::{make_strategy, HeadSharing, StrategyConfig, StrategyKind};
use nasnet_fuzz::checkpoint::{reference_genotype, reference_model_config, FILES};
use nasnet_fuzz::{join, SEPARATOR};
use nasnet_searchspace::{named, SearchSpace};
use nasnet_trainer::progress::Quiet;
use nasnet_trainer::readers::idx;
use nasnet_trainer::{Dataset, Splits, TrainConfig, Trainer};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    genotypes(&root);
    idx_files(&root);
    cifar(&root);
    images(&root);
    checkpoints(&root);
    run_dirs(&root);
}

/// Writes one seed, refusing content that holds the part separator by accident.
fn seed(root: &Path, target: &str, name: &str, bytes: &[u8], parts: usize) {
    let found = bytes
        .windows(SEPARATOR.len())
        .filter(|w| *w == SEPARATOR)
        .count();
    assert_eq!(found + 1, parts, "{target}/{name}: separator count");
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn named_genotypes() -> Vec<(&'static str, nasnet_searchspace::Genotype)> {
    vec![
        ("nasnet_a", named::nasnet_a()),
        ("pnasnet_5", named::pnasnet_5()),
        ("amoebanet_a", named::amoebanet_a()),
        ("darts_v2", named::darts_v2()),
        ("enas", named::enas()),
    ]
}

fn genotypes(root: &Path) {
    for (name, g) in named_genotypes() {
        seed(
            root,
            "genotype_json",
            &format!("{name}.json"),
            g.to_json_pretty().as_bytes(),
            1,
        );
        seed(
            root,
            "genotype_text",
            &format!("{name}.txt"),
            g.to_string().as_bytes(),
            1,
        );
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// The first `n` images and labels of the embedded set, as IDX files.
fn idx_pair(n: usize) -> (Vec<u8>, Vec<u8>) {
    let (train, _) = nasnet_trainer::readers::embedded().unwrap();
    let mut images = idx::IMAGES_MAGIC.to_be_bytes().to_vec();
    for d in [n, train.height, train.width] {
        images.extend((d as u32).to_be_bytes());
    }
    images.extend(&train.images[..n * train.image_size()]);
    let mut labels = idx::LABELS_MAGIC.to_be_bytes().to_vec();
    labels.extend((n as u32).to_be_bytes());
    labels.extend(train.labels[..n].iter().map(|&l| l as u8));
    (images, labels)
}

fn idx_files(root: &Path) {
    let (images, labels) = idx_pair(3);
    seed(root, "idx", "raw-3", &join(&[&images, &labels]), 2);
    seed(
        root,
        "idx",
        "gz-3",
        &join(&[&gzip(&images), &gzip(&labels)]),
        2,
    );
    let (images, labels) = idx_pair(1);
    seed(root, "idx", "mixed-1", &join(&[&images, &gzip(&labels)]), 2);
}

/// CIFAR records with labels `labels` (CIFAR-100 records carry a coarse label first).
fn cifar_records(labels: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        out.extend_from_slice(label);
        out.extend(
            (0..nasnet_trainer::readers::cifar::PIXELS).map(|p| ((p * 7 + i * 31) % 251) as u8),
        );
    }
    out
}

fn cifar(root: &Path) {
    seed(root, "cifar", "cifar10-2", &cifar_records(&[&[3], &[9]]), 1);
    seed(root, "cifar", "cifar100-1", &cifar_records(&[&[4, 42]]), 1);
    seed(
        root,
        "cifar",
        "cifar10-3",
        &cifar_records(&[&[0], &[1], &[2]]),
        1,
    );
}

fn encode(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn images(root: &Path) {
    use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgb, RgbImage};
    let gray = |v: u8| {
        DynamicImage::ImageLuma8(GrayImage::from_fn(6, 6, |x, y| {
            Luma([v ^ (x * 40 + y) as u8])
        }))
    };
    let rgb = |v: u8| {
        DynamicImage::ImageRgb8(RgbImage::from_fn(6, 6, |x, y| {
            Rgb([v, (x * 40) as u8, (y * 40) as u8])
        }))
    };
    let png_gray = encode(gray(10), ImageFormat::Png);
    let png_rgb = encode(rgb(200), ImageFormat::Png);
    let jpeg_gray = encode(gray(90), ImageFormat::Jpeg);
    let jpeg_rgb = encode(rgb(30), ImageFormat::Jpeg);
    seed(
        root,
        "image_folder",
        "png-gray-rgb",
        &join(&[&png_gray, &png_rgb]),
        2,
    );
    seed(
        root,
        "image_folder",
        "jpeg-gray-rgb",
        &join(&[&jpeg_gray, &jpeg_rgb]),
        2,
    );
    seed(
        root,
        "image_folder",
        "png-jpeg",
        &join(&[&png_rgb, &jpeg_gray]),
        2,
    );
    let big = DynamicImage::ImageRgb8(RgbImage::from_fn(10, 7, |x, y| {
        Rgb([x as u8 * 20, y as u8 * 30, 7])
    }));
    // One class is refused (a classifier needs 2).
    seed(
        root,
        "image_folder",
        "reject-png-alone",
        &encode(big, ImageFormat::Png),
        1,
    );
    // Extreme aspect ratios: the port's transform would resize them to 256 x 4194304.
    let black = |w, h| DynamicImage::ImageRgb8(RgbImage::new(w, h));
    for (name, w, h) in [("tall", 1, 16384), ("wide", 16384, 1)] {
        let thin = encode(black(w, h), ImageFormat::Png);
        let name = format!("reject-thin-{name}-png");
        seed(root, "image_folder", &name, &join(&[&thin, &png_rgb]), 2);
    }
    // A JPEG cut in half is refused as truncated.
    let cut = &jpeg_rgb[..jpeg_rgb.len() / 2];
    seed(
        root,
        "image_folder",
        "reject-truncated-jpeg",
        &join(&[cut, &jpeg_gray]),
        2,
    );
}

/// 16 synthetic 8 x 8 grey images of 10 classes.
fn tiny_dataset(seed: u32) -> Dataset {
    let pixels = (0..16 * 64u32)
        .map(|i| ((i * 37 + seed) % 256) as u8)
        .collect();
    let labels = (0..16).map(|i| (i * 3 + seed) % 10).collect();
    let classes = (0..10).map(|c| format!("c{c}")).collect();
    Dataset::new("tiny", pixels, labels, classes, 1, 8, 8).unwrap()
}

/// The files of a checkpoint folder the trainer wrote (one epoch of the reference model).
fn trained_checkpoint() -> Vec<Vec<u8>> {
    let tmp = scratch_dir("checkpoint");
    let train = tiny_dataset(1);
    let mut test = tiny_dataset(2);
    test.norm = train.norm.clone();
    let splits = Splits {
        train: Arc::new(train),
        val: None,
        test: Arc::new(test),
    };
    let mut cfg = TrainConfig::quick(1);
    cfg.batch_size = 8;
    let mut trainer = Trainer::new(
        &reference_genotype(),
        &reference_model_config(),
        &cfg,
        &Device::Cpu,
    )
    .unwrap()
    .with_output_dir(&tmp)
    .unwrap();
    trainer.train(&splits, &mut Quiet).unwrap();
    FILES[..3]
        .iter()
        .map(|f| std::fs::read(tmp.join(f)).unwrap())
        .collect()
}

fn checkpoints(root: &Path) {
    let files = trained_checkpoint();
    let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    seed(root, "checkpoint", "trained", &join(&refs), 3);
    // A save interrupted after its commit record: state.json.tmp names the .tmp tensor files.
    let pending = [
        refs[0],
        b"stale model",
        b"stale optimizer",
        refs[0],
        refs[1],
        refs[2],
    ];
    seed(root, "checkpoint", "interrupted-save", &join(&pending), 6);
    seed(root, "checkpoint", "reject-state-only", refs[0], 1);
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("nasnet-make-corpus-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A search of `trials` children with a synthetic reward, packed as the `run_dir` target's
/// parts (its checkpoint folder renamed to the one the harness uses).
fn search(kind: StrategyKind, trials: u64) -> Vec<u8> {
    let dir = scratch_dir(kind.name());
    let config = serde_json::json!({"strategy": kind.name(), "budget": trials, "seed": 3});
    let run = RunDir::create(&dir, &config).unwrap();
    let mut cfg = StrategyConfig::default();
    cfg.controller.hidden_size = 4;
    cfg.controller.heads = HeadSharing::PerKind;
    cfg.controller.batch_size = 2;
    cfg.evolution.population = 3;
    cfg.evolution.sample_size = 2;
    let mut space = SearchSpace::nasnet();
    space.blocks = 2;
    let mut strategy = make_strategy(kind, space, &cfg, 3).unwrap();
    let mut backend = FnBackend::new(|spec| {
        TrialOutcome::ok(
            spec.trial,
            1.0 / (1.0 + spec.trial as f64),
            1000 + spec.trial,
            0.5,
        )
    });
    run_search(strategy.as_mut(), &mut backend, &run, trials, &mut |_| {}).unwrap();
    let current = std::fs::read_to_string(dir.join("state/CURRENT")).unwrap();
    let ckpt = dir.join("state").join(current.trim());
    let read = |p: PathBuf| std::fs::read(p).unwrap_or_default();
    let files = [
        read(dir.join("config.json")),
        read(dir.join("trials.jsonl")),
        nasnet_fuzz::run_dir::CHECKPOINT.as_bytes().to_vec(),
        read(ckpt.join("loop.json")),
        read(ckpt.join(nasnet_controller::STATE_FILE)),
        read(ckpt.join(nasnet_controller::WEIGHTS_FILE)),
    ];
    let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    join(&refs)
}

fn run_dirs(root: &Path) {
    for (kind, trials) in [
        (StrategyKind::Ppo, 3),
        (StrategyKind::Reinforce, 2),
        (StrategyKind::Random, 2),
        (StrategyKind::Evolution, 5),
    ] {
        let packed = search(kind, trials);
        seed(root, "run_dir", kind.name(), &packed, 6);
        if kind == StrategyKind::Ppo {
            huge_sizes(root, &packed);
        }
    }
}

/// The reproducers of the bug fuzzing found: `strategy.json` declaring 10^12 LSTM units or
/// blocks per cell (the process aborted on the allocation; now refused before it).
fn huge_sizes(root: &Path, packed: &[u8]) {
    for (name, pointer) in [
        ("reject-huge-hidden-size", "/config/controller/hidden_size"),
        ("reject-huge-blocks", "/space/blocks"),
    ] {
        let mut files: Vec<Vec<u8>> = nasnet_fuzz::parts(packed, 6)
            .iter()
            .map(|p| p.to_vec())
            .collect();
        let mut state: serde_json::Value = serde_json::from_slice(&files[4]).unwrap();
        *state.pointer_mut(pointer).unwrap() = serde_json::json!(1_000_000_000_000u64);
        files[4] = serde_json::to_vec_pretty(&state).unwrap();
        let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        seed(root, "run_dir", name, &join(&refs), 6);
    }
}
