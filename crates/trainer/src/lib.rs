//! nasnet-trainer: turns nasnet-cells' models into trained classifiers, as TF-slim's NASNet
//! training does (REFERENCE.md §4, §5), and trains the children of the architecture search.
//!
//! - [`data`]: strict readers (IDX, CIFAR binary, image folders), the embedded Fashion-MNIST
//!   subset, and the seeded train / validation / test split;
//! - [`augment`] and [`loader`]: seeded augmentation and batches made on a background thread;
//! - [`optim`] and [`schedule`]: SGD with momentum, Nesterov, weight decay and clipping; cosine,
//!   exponential and warm-up schedules; drop-path progress;
//! - [`checkpoint`]: crash-safe checkpoints.

pub mod augment;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod loader;
pub mod optim;
pub mod schedule;

pub use augment::AugmentConfig;
pub use data::{DataConfig, DataSource, Dataset, Normalization, Splits};
pub use error::{DataError, Result, TrainError};
pub use optim::{Sgd, SgdConfig};
pub use schedule::{drop_path_progress, LrSchedule, ScheduleConfig};
