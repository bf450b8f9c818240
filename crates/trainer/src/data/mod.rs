//! Datasets in memory, the sources they come from, and the train / validation / test split.
//!
//! Pixels stay `u8` in `(N, C, H, W)` order until a batch is made (a quarter of the memory of
//! `f32`); normalisation and augmentation happen per batch, see [`crate::augment`]. The
//! validation set is held out of the training set with a seeded draw independent of the training
//! seed, so every child of an architecture search is scored on the same images.

pub mod cifar;
pub mod folder;
pub mod idx;
mod kind;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nasnet_cells::vision::{EvalTransform, Interpolation};
use nasnet_cells::Port;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::DataError;

pub use kind::DatasetKind;

/// Fashion-MNIST's class names, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// MNIST's class names.
pub const DIGIT_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Per-channel mean and standard deviation of pixel values scaled to [0, 1]; a batch pixel is
/// `(p / 255 - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel (never zero).
    pub std: Vec<f32>,
}

impl Normalization {
    /// No-op normalisation for `channels` channels (mean 0, std 1).
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }
}

/// Images and labels in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// A short name (`fashion-mnist`, `cifar10`, ...), for messages.
    pub name: String,
    /// Pixels, `len() * channels * height * width` bytes in `(N, C, H, W)` order.
    pub images: Vec<u8>,
    /// One label per image, each below `class_names.len()`.
    pub labels: Vec<u32>,
    /// Class names in label order.
    pub class_names: Vec<String>,
    /// Channels per image (1 or 3).
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// The normalisation batches of this set use (the training set's statistics after a split).
    pub norm: Normalization,
}

impl Dataset {
    /// Checks sizes and labels and builds a dataset with its own statistics as normalisation.
    pub fn new(
        name: &str,
        images: Vec<u8>,
        labels: Vec<u32>,
        class_names: Vec<String>,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self, DataError> {
        let item = channels * height * width;
        if item == 0 || images.len() != labels.len() * item {
            return Err(DataError::Split(format!(
                "{name}: {} pixel bytes do not make {} images of {channels}x{height}x{width}",
                images.len(),
                labels.len()
            )));
        }
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= class_names.len()) {
            return Err(DataError::Split(format!(
                "{name}: label {l} but only {} classes",
                class_names.len()
            )));
        }
        let mut d = Dataset {
            name: name.to_string(),
            images,
            labels,
            class_names,
            channels,
            height,
            width,
            norm: Normalization::identity(channels),
        };
        d.norm = d.statistics();
        Ok(d)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// Bytes per image.
    pub fn image_size(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.image_size();
        &self.images[i * s..(i + 1) * s]
    }

    /// The images at `indices`, in that order, with this set's normalisation.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * self.image_size());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            name: self.name.clone(),
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            norm: self.norm.clone(),
        }
    }

    /// Per-channel mean and standard deviation of the pixels (scaled to [0, 1]).
    pub fn statistics(&self) -> Normalization {
        let plane = self.height * self.width;
        let mut sum = vec![0f64; self.channels];
        let mut sq = vec![0f64; self.channels];
        for img in self.images.chunks_exact(self.image_size().max(1)) {
            for c in 0..self.channels {
                let (mut s, mut q) = (0u64, 0u64);
                for &p in &img[c * plane..(c + 1) * plane] {
                    s += u64::from(p);
                    q += u64::from(p) * u64::from(p);
                }
                sum[c] += s as f64;
                sq[c] += q as f64;
            }
        }
        let n = (self.len() * plane).max(1) as f64;
        let mut mean = Vec::with_capacity(self.channels);
        let mut std = Vec::with_capacity(self.channels);
        for c in 0..self.channels {
            let m = sum[c] / n / 255.0;
            let v = (sq[c] / n / (255.0 * 255.0) - m * m).max(0.0);
            mean.push(m as f32);
            std.push(if v > 1e-12 { v.sqrt() as f32 } else { 1.0 });
        }
        Normalization { mean, std }
    }

    /// The same images with `channels` channels (gray replicated to RGB, or RGB averaged with
    /// the ITU-R 601 weights to gray).
    pub fn with_channels(mut self, channels: usize) -> Dataset {
        if channels == self.channels {
            return self;
        }
        let plane = self.height * self.width;
        let mut out = Vec::with_capacity(self.len() * channels * plane);
        for img in self.images.chunks_exact(self.image_size()) {
            if channels == 3 && self.channels == 1 {
                for _ in 0..3 {
                    out.extend_from_slice(img);
                }
            } else {
                for i in 0..plane {
                    let (r, g, b) = (
                        f32::from(img[i]),
                        f32::from(img[plane + i]),
                        f32::from(img[2 * plane + i]),
                    );
                    out.push((0.299 * r + 0.587 * g + 0.114 * b).round().min(255.0) as u8);
                }
            }
        }
        self.images = out;
        self.channels = channels;
        self.norm = self.statistics();
        self
    }

    /// Images per class, in label order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DataSource {
    /// The Fashion-MNIST subset compiled into the binary (12,000 train, 2,000 test).
    Embedded,
    /// Fashion-MNIST IDX files in a folder.
    FashionMnist {
        /// The folder.
        dir: PathBuf,
    },
    /// MNIST IDX files in a folder.
    Mnist {
        /// The folder.
        dir: PathBuf,
    },
    /// CIFAR-10 binary files in a folder.
    Cifar10 {
        /// The folder.
        dir: PathBuf,
    },
    /// CIFAR-100 binary files in a folder.
    Cifar100 {
        /// The folder.
        dir: PathBuf,
    },
    /// A class-per-sub-folder image tree.
    Folder {
        /// The folder.
        dir: PathBuf,
        /// Resize every image to this square size (else all must share one size).
        image_size: Option<usize>,
    },
}

impl DataSource {
    /// Builds a source from a dataset name (see [`DatasetKind`]) and a folder (required by all
    /// but `embedded`).
    pub fn from_name(
        name: &str,
        dir: Option<&Path>,
        image_size: Option<usize>,
    ) -> Result<Self, DataError> {
        DataSource::from_kind(name.parse()?, dir, image_size)
    }

    /// The short name used in messages and metrics.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Whether this is CIFAR-10/100, for which the paper's recipe is the default.
    pub fn is_cifar(&self) -> bool {
        matches!(
            self,
            DataSource::Cifar10 { .. } | DataSource::Cifar100 { .. }
        )
    }

    /// Whether a horizontal flip keeps an image's class (not so for digits).
    pub fn flip_preserves_class(&self) -> bool {
        !matches!(self, DataSource::Mnist { .. })
    }

    /// Reads the training and (when the source has one) test sets.
    pub fn read(&self) -> Result<(Dataset, Option<Dataset>), DataError> {
        match self {
            #[cfg(feature = "embedded")]
            DataSource::Embedded => {
                let (train, test) = embedded()?;
                Ok((train, Some(test)))
            }
            #[cfg(not(feature = "embedded"))]
            DataSource::Embedded => Err(DataError::EmbeddedNotBuilt),
            DataSource::FashionMnist { dir } => {
                let (a, b) = idx::read_mnist_dir("fashion-mnist", dir, &FASHION_CLASSES)?;
                Ok((a, Some(b)))
            }
            DataSource::Mnist { dir } => {
                let (a, b) = idx::read_mnist_dir("mnist", dir, &DIGIT_CLASSES)?;
                Ok((a, Some(b)))
            }
            DataSource::Cifar10 { dir } => {
                let (a, b) = cifar::read_cifar10_dir(dir, true)?;
                Ok((a, Some(b)))
            }
            DataSource::Cifar100 { dir } => {
                let (a, b) = cifar::read_cifar100_dir(dir, true)?;
                Ok((a, Some(b)))
            }
            DataSource::Folder { dir, image_size } => folder::read_image_folder(dir, *image_size),
        }
    }
}

#[cfg(feature = "embedded")]
const EMBEDDED_TRAIN_IMAGES: &[u8] = include_bytes!("../../data/train-images-idx3-ubyte.gz");
#[cfg(feature = "embedded")]
const EMBEDDED_TRAIN_LABELS: &[u8] = include_bytes!("../../data/train-labels-idx1-ubyte.gz");
#[cfg(feature = "embedded")]
const EMBEDDED_TEST_IMAGES: &[u8] = include_bytes!("../../data/test-images-idx3-ubyte.gz");
#[cfg(feature = "embedded")]
const EMBEDDED_TEST_LABELS: &[u8] = include_bytes!("../../data/test-labels-idx1-ubyte.gz");

/// The embedded Fashion-MNIST subset: 12,000 training and 2,000 test images, 1,200 and 200 per
/// class (see `data/README.md` and `tools/make_embedded_dataset.py`). Only in builds with the
/// `embedded` cargo feature (the default).
#[cfg(feature = "embedded")]
pub fn embedded() -> Result<(Dataset, Dataset), DataError> {
    let p = |s: &str| PathBuf::from(format!("<embedded>/{s}"));
    let train = idx::dataset_from_idx_bytes(
        "embedded",
        EMBEDDED_TRAIN_IMAGES.to_vec(),
        &p("train-images-idx3-ubyte.gz"),
        EMBEDDED_TRAIN_LABELS.to_vec(),
        &p("train-labels-idx1-ubyte.gz"),
        &FASHION_CLASSES,
    )?;
    let test = idx::dataset_from_idx_bytes(
        "embedded",
        EMBEDDED_TEST_IMAGES.to_vec(),
        &p("test-images-idx3-ubyte.gz"),
        EMBEDDED_TEST_LABELS.to_vec(),
        &p("test-labels-idx1-ubyte.gz"),
        &FASHION_CLASSES,
    )?;
    Ok((train, test))
}

/// The input a pretrained checkpoint expects, for fine-tuning it: RGB images brought to the
/// model's size by the port's evaluation transform as they are read (see
/// [`folder::Sizing::ResizeCrop`]) and normalised with the port's constants rather than the
/// data's own statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainedInput {
    /// The shorter side of every image after resizing (256 for a 224 crop in the Mobile port).
    pub resize: usize,
    /// The side of the central crop: the model's input size.
    pub crop: usize,
    /// Bicubic resizing (timm's Large) rather than bilinear (pretrainedmodels' Mobile).
    #[serde(default)]
    pub bicubic: bool,
    /// The checkpoint's normalisation (mean 0.5, std 0.5 for both ports).
    pub norm: Normalization,
}

impl PretrainedInput {
    /// The input `port`'s checkpoints expect ([`nasnet_cells::vision::EvalTransform`]), at
    /// `crop` x `crop` when given (a model fine-tuned at another size: the resize scales with
    /// it), else at the size the port's checkpoints were trained at.
    pub fn for_port(port: Port, crop: Option<usize>) -> Self {
        let spec = match crop {
            Some(crop) => EvalTransform::for_port_at(port, crop),
            None => EvalTransform::for_port(port),
        };
        PretrainedInput {
            resize: spec.resize,
            crop: spec.crop,
            bicubic: spec.interpolation == Interpolation::Bicubic,
            norm: Normalization {
                mean: spec.mean.to_vec(),
                std: spec.std.to_vec(),
            },
        }
    }
}

/// How to read and split the data. Non-exhaustive, as it grows: start from
/// [`DataConfig::new`] and set fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DataConfig {
    /// Where the data comes from.
    pub source: DataSource,
    /// Images held out of the training set for validation (0: no validation set).
    pub val_size: usize,
    /// Use at most this many training images (after the validation hold-out).
    pub train_limit: Option<usize>,
    /// Use at most this many test images (the first ones).
    pub test_limit: Option<usize>,
    /// Images held out of the training set as the test set when the source has none (an image
    /// folder without `test/`).
    pub folder_test_size: usize,
    /// Seed of the hold-out draws; independent of the training seed so that runs with different
    /// seeds see the same validation images.
    pub split_seed: u64,
    /// The input of a pretrained checkpoint being fine-tuned (image folders only): sizing,
    /// RGB, fixed normalisation. `None`: images as the source has them, normalised with the
    /// training set's statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PretrainedInput>,
}

impl DataConfig {
    /// A config reading `source` with no validation set and no limits.
    pub fn new(source: DataSource) -> Self {
        DataConfig {
            source,
            val_size: 0,
            train_limit: None,
            test_limit: None,
            folder_test_size: 0,
            split_seed: 0,
            pretrained: None,
        }
    }
}

/// The training, validation and test sets, all normalised with the training set's statistics.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Images the model learns from.
    pub train: Arc<Dataset>,
    /// Images held out of the training set, when asked for.
    pub val: Option<Arc<Dataset>>,
    /// The test set.
    pub test: Arc<Dataset>,
}

impl Splits {
    /// Splits already-read sets: holds `val_size` seeded-random images out of `train`, keeps at
    /// most `train_limit` of the rest (seeded-random), then normalises all three sets with the
    /// remaining training set's statistics.
    pub fn from_sets(
        train: Dataset,
        test: Option<Dataset>,
        cfg: &DataConfig,
    ) -> Result<Splits, DataError> {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.split_seed ^ 0x5EED_5EED_0000_0001);
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let test = match test {
            Some(t) => t,
            None => {
                let n = if cfg.folder_test_size > 0 {
                    cfg.folder_test_size
                } else {
                    (train.len() / 6).max(1)
                };
                if n >= order.len() {
                    return Err(DataError::Split(format!(
                        "{}: cannot hold {n} test images out of {} images",
                        train.name,
                        train.len()
                    )));
                }
                let mut idx: Vec<usize> = order.drain(..n).collect();
                idx.sort_unstable();
                train.subset(&idx)
            }
        };
        if train.channels != test.channels
            || train.height != test.height
            || train.width != test.width
        {
            return Err(DataError::Split(format!(
                "{}: training images are {}x{}x{}, test images {}x{}x{}",
                train.name,
                train.channels,
                train.height,
                train.width,
                test.channels,
                test.height,
                test.width
            )));
        }
        if cfg.val_size >= order.len() {
            return Err(DataError::Split(format!(
                "{}: a validation set of {} images leaves no training images (the training set has {})",
                train.name,
                cfg.val_size,
                order.len()
            )));
        }
        let val = if cfg.val_size > 0 {
            let mut idx: Vec<usize> = order.drain(..cfg.val_size).collect();
            idx.sort_unstable();
            Some(train.subset(&idx))
        } else {
            None
        };
        if let Some(limit) = cfg.train_limit {
            if limit == 0 {
                return Err(DataError::Split(
                    "the training limit must be at least 1".into(),
                ));
            }
            order.truncate(limit);
        }
        order.sort_unstable();
        let mut train_set = train.subset(&order);
        train_set.norm = match &cfg.pretrained {
            Some(p) => p.norm.clone(),
            None => train_set.statistics(),
        };
        let norm = train_set.norm.clone();
        let mut test = match cfg.test_limit {
            Some(l) if l < test.len() => test.subset(&(0..l).collect::<Vec<_>>()),
            _ => test,
        };
        if test.is_empty() {
            return Err(DataError::Split("the test set is empty".into()));
        }
        test.norm = norm.clone();
        let val = val.map(|mut v| {
            v.norm = norm.clone();
            Arc::new(v)
        });
        Ok(Splits {
            train: Arc::new(train_set),
            val,
            test: Arc::new(test),
        })
    }

    /// Reads `cfg.source` (with `cfg.pretrained`'s sizing and RGB) and splits it.
    pub fn load(cfg: &DataConfig) -> Result<Splits, DataError> {
        let (train, test) = match (&cfg.pretrained, &cfg.source) {
            (None, source) => source.read()?,
            (Some(p), DataSource::Folder { dir, .. }) => {
                let sizing = folder::Sizing::ResizeCrop {
                    resize: p.resize,
                    crop: p.crop,
                    bicubic: p.bicubic,
                };
                let (train, test) = folder::read_sized_folder(dir, sizing)?;
                (train.with_channels(3), test.map(|t| t.with_channels(3)))
            }
            (Some(_), source) => {
                return Err(DataError::Split(format!(
                    "fine-tuning a pretrained checkpoint reads an image folder, not {}",
                    source.name()
                )))
            }
        };
        Splits::from_sets(train, test, cfg)
    }
}
