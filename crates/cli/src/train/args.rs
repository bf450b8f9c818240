//! The flags of `nasnet train`, shared by its two modes (from scratch, and fine-tuning with
//! `--weights`).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use nasnet_trainer::{DatasetKind, DeviceChoice};

use crate::choices::{dataset_parser, NetArg, StemArg};

/// The learning-rate decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// Cosine decay to --min-lr over the run.
    Cosine,
    /// TF-slim's ImageNet staircase: x0.97 every 2.4 epochs.
    Exponential,
    /// No decay.
    Constant,
}

/// Arguments of `nasnet train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Architecture: a known name (nasnet-a, pnasnet-5, ...) or a genotype file (JSON or text).
    #[arg(long, default_value = "nasnet-a")]
    pub arch: String,
    /// Network size: N@P (N normal cells per stack, P = 24 F), or `mobile` / `large` for the
    /// ImageNet presets.
    #[arg(long, default_value = "2@384")]
    pub net: NetArg,
    /// Stem (default: cifar for N@P, imagenet for mobile/large).
    #[arg(long, value_enum)]
    pub stem: Option<StemArg>,
    /// Filters of the stem conv `conv0` (default 3 F on the CIFAR stem, 32 on an N@P ImageNet
    /// stem, the preset's for mobile / large), e.g. to match a checkpoint's.
    #[arg(long)]
    pub stem_filters: Option<usize>,
    /// Fine-tune this pretrained checkpoint (safetensors or PyTorch .pth) on --dataset folder:
    /// its tensors are the starting point, the classifier is re-created when the class count
    /// differs (docs/training.md#fine-tuning).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// With --weights: train the classifier only; the backbone stays as the checkpoint has it
    /// and runs in inference mode (batch norm on its running statistics).
    #[arg(long, requires = "weights")]
    pub freeze_backbone: bool,
    /// Dataset (all but `embedded` read --data-dir).
    #[arg(long, value_parser = dataset_parser(), ignore_case = true, default_value_t = DatasetKind::Embedded)]
    pub dataset: DatasetKind,
    /// Folder holding the dataset's files (all but `embedded`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Resize folder images to this square size (with --weights: the side of the crop the model
    /// sees, default the preset's 224 / 331).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Use at most this many training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Hold this many training images out as a validation set.
    #[arg(long, default_value_t = 0)]
    pub val_size: usize,
    /// Use at most this many test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Seed of the validation hold-out (independent of --seed).
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Images per step (default 32 on CIFAR and when fine-tuning, 64 otherwise).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Base learning rate (default 0.025 on CIFAR, 0.01 when fine-tuning, 0.1 otherwise).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning-rate decay.
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleArg,
    /// Final learning rate of the cosine decay.
    #[arg(long, default_value_t = 0.0)]
    pub min_lr: f64,
    /// Epochs of linear learning-rate warm-up.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_epochs: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Plain (heavy-ball) momentum instead of Nesterov.
    #[arg(long)]
    pub no_nesterov: bool,
    /// L2 weight decay on conv and linear weights.
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Clip the gradients' global norm to this finite value > 0 (0: no clipping; negative,
    /// NaN and infinite values are errors).
    #[arg(long, default_value_t = 5.0)]
    pub clip_norm: f64,
    /// Label smoothing.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Final ScheduledDropPath keep probability (default 0.6 on CIFAR, 1.0 = off otherwise).
    #[arg(long)]
    pub drop_path_keep: Option<f64>,
    /// Train with the auxiliary head (default on CIFAR).
    #[arg(long, conflicts_with = "no_aux_head")]
    pub aux_head: bool,
    /// Train without the auxiliary head (default off CIFAR).
    #[arg(long)]
    pub no_aux_head: bool,
    /// Weight of the auxiliary loss.
    #[arg(long, default_value_t = 0.4)]
    pub aux_weight: f64,
    /// Padding of the random crop (default 4 at 32x32 on CIFAR, 0 = no crop otherwise).
    #[arg(long)]
    pub crop_pad: Option<usize>,
    /// Side of the cutout square (0: none).
    #[arg(long, default_value_t = 0)]
    pub cutout: usize,
    /// No random horizontal flips.
    #[arg(long)]
    pub no_flip: bool,
    /// Seed of the data order and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: cpu, cuda, cuda:N, metal or metal:N (cuda and metal need the cargo feature).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Output folder for checkpoints and metrics (default runs/train-<unix time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (with its saved settings; the model,
    /// data and training flags are then ignored).
    #[arg(long)]
    pub resume: bool,
    /// Also checkpoint every this many steps inside an epoch.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Start even when the model's estimated memory is above what the machine has available.
    #[arg(long)]
    pub no_memory_check: bool,
}
