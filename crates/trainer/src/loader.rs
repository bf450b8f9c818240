//! Batches made on a background thread, so the model never waits for data.
//!
//! An epoch's order is a seeded shuffle of the training set; batch `b` of epoch `e` draws its
//! augmentations from `batch_rng(seed, e, b)`. Both depend only on (seed, epoch, batch), so a run
//! resumed in the middle of an epoch sees exactly the batches an uninterrupted run would. The
//! producer thread stops by itself when the consumer drops the stream.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::augment::{batch_rng, make_batch, mix_seed, AugmentConfig};
use crate::data::Dataset;

/// One batch, ready to become a tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Position of the batch in its epoch.
    pub index: usize,
    /// `(len, C, H, W)` normalised pixels.
    pub images: Vec<f32>,
    /// One label per image.
    pub labels: Vec<u32>,
}

impl Batch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The order of the training set in epoch `epoch` (a seeded shuffle).
pub(crate) fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, epoch as u64, u64::MAX));
    order.shuffle(&mut rng);
    order
}

/// Full training batches per epoch (the last incomplete batch is dropped, so batch-norm never
/// sees a batch of one and every step has the same size).
pub(crate) fn train_batches_per_epoch(len: usize, batch_size: usize) -> usize {
    len / batch_size.max(1)
}

/// Builds training batch `batch` of epoch `epoch` synchronously (what the background thread
/// does; also used by tests to check determinism).
pub(crate) fn train_batch(
    data: &Dataset,
    order: &[usize],
    batch_size: usize,
    augment: &AugmentConfig,
    seed: u64,
    epoch: usize,
    batch: usize,
) -> Batch {
    let indices = &order[batch * batch_size..(batch + 1) * batch_size];
    let mut rng = batch_rng(seed, epoch as u64, batch as u64);
    let (images, labels) = make_batch(data, indices, Some(augment), &mut rng);
    Batch {
        index: batch,
        images,
        labels,
    }
}

/// A stream of batches produced by a background thread.
pub struct BatchStream {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
}

impl BatchStream {
    /// Training batches `first_batch..` of epoch `epoch`, augmented, `prefetch` made ahead.
    pub fn train(
        data: Arc<Dataset>,
        batch_size: usize,
        augment: AugmentConfig,
        seed: u64,
        epoch: usize,
        first_batch: usize,
        prefetch: usize,
    ) -> Self {
        let (tx, rx) = sync_channel(prefetch.max(1));
        let handle = std::thread::spawn(move || {
            let order = epoch_order(data.len(), seed, epoch);
            let n = train_batches_per_epoch(data.len(), batch_size);
            for b in first_batch..n {
                let batch = train_batch(&data, &order, batch_size, &augment, seed, epoch, b);
                if tx.send(batch).is_err() {
                    return;
                }
            }
        });
        BatchStream {
            rx: Some(rx),
            handle: Some(handle),
        }
    }

    /// Every image of `data` in order, normalised only, in batches of `batch_size` (the last may
    /// be smaller).
    pub fn eval(data: Arc<Dataset>, batch_size: usize, prefetch: usize) -> Self {
        let (tx, rx) = sync_channel(prefetch.max(1));
        let batch_size = batch_size.max(1);
        let handle = std::thread::spawn(move || {
            let all: Vec<usize> = (0..data.len()).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            for (index, chunk) in all.chunks(batch_size).enumerate() {
                let (images, labels) = make_batch(&data, chunk, None, &mut rng);
                let batch = Batch {
                    index,
                    images,
                    labels,
                };
                if tx.send(batch).is_err() {
                    return;
                }
            }
        });
        BatchStream {
            rx: Some(rx),
            handle: Some(handle),
        }
    }
}

impl Iterator for BatchStream {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        // Dropping the receiver makes the producer's next send fail, so it returns promptly.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
