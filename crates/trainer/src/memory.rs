//! A size check before allocating: estimate what a model will need and refuse it, with a clear
//! error, when that is more than the machine has, instead of letting a multi-gigabyte allocation
//! abort the process.
//!
//! The estimate, in bytes of f32 values (`NasNet::activation_values` explains the activation
//! count, an over-estimate of what candle keeps):
//! - training: `4 x (4 x parameters + 2 x batch x activations)`: weights, gradients, momentum
//!   and one temporary per weight; every activation of the batch kept for the backward pass plus
//!   its gradient;
//! - inference: `4 x (parameters + 3 x batch x largest cell's activations)`: the weights, and
//!   the largest cell's values with its two inputs.
//!
//! What the machine has is `MemAvailable` of `/proc/meminfo` on Linux; elsewhere the check is
//! skipped. Users who know better override it (`--no-memory-check` in the command line).

use nasnet_cells::{NasNet, NasNetConfig};
use nasnet_searchspace::Genotype;

use crate::error::{Result, TrainError};

/// What a model needs, as estimated before it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Trainable parameters (exact).
    pub parameters: u64,
    /// Values one image keeps alive (the model's activation count for this use).
    pub values_per_image: u64,
    /// Images per batch.
    pub batch: usize,
    /// Estimated bytes in all (saturating at `u64::MAX`).
    pub bytes: u64,
}

/// Whether the model will be trained or only evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Forward and backward passes, optimiser state.
    Training,
    /// Forward passes in inference mode.
    Inference,
}

/// Estimates the memory of `genotype` under `cfg` (at `cfg.image_size`) for batches of `batch`,
/// without allocating its weights; see the module documentation for the formula.
pub fn estimate(
    genotype: &Genotype,
    cfg: &NasNetConfig,
    batch: usize,
    use_: Use,
) -> Result<MemoryEstimate> {
    let model = NasNet::shape_only(genotype, cfg)?;
    let parameters = model.parameter_count();
    let values = model.activation_values(cfg.image_size, cfg.image_size);
    let (weight_copies, values_per_image, per_value) = match use_ {
        Use::Training => (4, values.total, 2),
        Use::Inference => (1, values.largest_cell, 3),
    };
    let activations = values_per_image
        .saturating_mul(batch as u64)
        .saturating_mul(per_value);
    let bytes = parameters
        .saturating_mul(weight_copies)
        .saturating_add(activations)
        .saturating_mul(4);
    Ok(MemoryEstimate {
        parameters,
        values_per_image,
        batch,
        bytes,
    })
}

/// Bytes of memory available to a new allocation: `MemAvailable` of `/proc/meminfo`, or None
/// where it cannot be read (not Linux).
pub(crate) fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `Err(TrainError::TooLarge)` when `estimate` needs more than `available` bytes (no check when
/// that is unknown). `what` names the model for the message.
pub(crate) fn check_fits(
    what: &str,
    estimate: &MemoryEstimate,
    available: Option<u64>,
) -> Result<()> {
    match available {
        Some(available) if estimate.bytes > available => Err(TrainError::TooLarge {
            what: what.to_string(),
            estimate: *estimate,
            available,
        }),
        _ => Ok(()),
    }
}

/// Estimates `genotype` under `cfg` for `use_` and checks it against this machine's available
/// memory.
pub fn check_model_fits(
    what: &str,
    genotype: &Genotype,
    cfg: &NasNetConfig,
    batch: usize,
    use_: Use,
) -> Result<()> {
    check_fits(
        what,
        &estimate(genotype, cfg, batch, use_)?,
        available_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cifar(n: usize, p: usize) -> NasNetConfig {
        NasNetConfig::cifar(n, p).unwrap()
    }

    #[test]
    fn reads_mem_available() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(parse_mem_available(text), Some(12_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn a_small_model_fits_and_a_huge_one_does_not() {
        let g = nasnet_searchspace::named::nasnet_a();
        let gib = 1u64 << 30;
        let small = estimate(&g, &cifar(1, 24), 32, Use::Training).unwrap();
        assert!(small.bytes < gib, "{small:?}");
        assert!(check_fits("1@24", &small, Some(8 * gib)).is_ok());
        let huge = estimate(&g, &cifar(100, 99984), 64, Use::Training).unwrap();
        let err = check_fits("100@99984", &huge, Some(64 * gib)).unwrap_err();
        assert!(matches!(err, TrainError::TooLarge { .. }), "{err:?}");
        assert!(err.is_user_error());
        // Unknown availability: no check.
        assert!(check_fits("100@99984", &huge, None).is_ok());
    }

    #[test]
    fn training_needs_more_than_inference_and_grows_with_the_batch() {
        let g = nasnet_searchspace::named::nasnet_a();
        let cfg = cifar(2, 384);
        let train = estimate(&g, &cfg, 32, Use::Training).unwrap();
        let infer = estimate(&g, &cfg, 32, Use::Inference).unwrap();
        let bigger = estimate(&g, &cfg, 64, Use::Training).unwrap();
        assert!(infer.bytes < train.bytes && train.bytes < bigger.bytes);
        assert_eq!(
            train.parameters,
            NasNet::shape_only(&g, &cfg).unwrap().parameter_count()
        );
    }
}
