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
//! The counts are exact and cost constant time and memory whatever the size: a network of up to
//! [`BUILT_UP_TO`] cells per stack is built shape-only and counted; a deeper one adds only
//! copies of a stack's steady-state normal cell (from the third cell of a stack on, every cell
//! reads two tensors of its own shape), so its counts are extrapolated from the networks of
//! `BUILT_UP_TO - 1` and `BUILT_UP_TO` cells per stack. Building a `--net 100000@24000` to
//! count it took gigabytes, the very exhaustion the check exists to prevent.
//!
//! What the machine has is `MemAvailable` of `/proc/meminfo` on Linux; elsewhere the check is
//! skipped. Users who know better override it (`--no-memory-check` in the command line).

use nasnet_cells::{ActivationValues, NasNet, NasNetConfig};
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
/// without allocating its weights, in constant time and memory whatever `cfg`'s size; see the
/// module documentation for the formula.
pub fn estimate(
    genotype: &Genotype,
    cfg: &NasNetConfig,
    batch: usize,
    use_: Use,
) -> Result<MemoryEstimate> {
    let ModelCounts { parameters, values } = model_counts(genotype, cfg)?;
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

/// The most cells per stack [`estimate`] builds a shape-only network of; deeper networks are
/// extrapolated (see the module documentation). At least 3, so that both networks it
/// extrapolates from hold a steady-state normal cell in every stack.
const BUILT_UP_TO: usize = 6;

/// What [`estimate`] reads off a network: its trainable parameters and activation values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelCounts {
    parameters: u64,
    values: ActivationValues,
}

/// The counts of `genotype` under `cfg`: built for up to [`BUILT_UP_TO`] cells per stack,
/// extrapolated beyond (each further cell per stack adds what the last one did).
fn model_counts(genotype: &Genotype, cfg: &NasNetConfig) -> Result<ModelCounts> {
    if cfg.cells_per_stack <= BUILT_UP_TO {
        return built_counts(genotype, cfg);
    }
    cfg.validate()?;
    let with_cells = |cells_per_stack| {
        let mut shallow = cfg.clone();
        shallow.cells_per_stack = cells_per_stack;
        shallow
    };
    let shallower = built_counts(genotype, &with_cells(BUILT_UP_TO - 1))?;
    let deepest = built_counts(genotype, &with_cells(BUILT_UP_TO))?;
    let more = (cfg.cells_per_stack - BUILT_UP_TO) as u64;
    let extend = |last: u64, before: u64| {
        last.saturating_add(last.saturating_sub(before).saturating_mul(more))
    };
    Ok(ModelCounts {
        parameters: extend(deepest.parameters, shallower.parameters),
        values: ActivationValues {
            total: extend(deepest.values.total, shallower.values.total),
            largest_cell: deepest.values.largest_cell,
        },
    })
}

/// The counts of the shape-only network of `genotype` under `cfg` (its cost is linear in the
/// cells per stack).
fn built_counts(genotype: &Genotype, cfg: &NasNetConfig) -> Result<ModelCounts> {
    let model = NasNet::shape_only(genotype, cfg)?;
    Ok(ModelCounts {
        parameters: model.parameter_count(),
        values: model.activation_values(cfg.image_size, cfg.image_size),
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

    /// Deep networks' counts, extrapolated, are those of the built network, for both stems,
    /// with and without the aux head, skipping reduction inputs (Large) or not, and for another
    /// genotype.
    #[test]
    fn extrapolated_counts_equal_the_built_networks() {
        let mut aux = cifar(BUILT_UP_TO + 1, 96);
        aux.aux_head = true;
        let cases = [
            (
                nasnet_searchspace::named::nasnet_a(),
                cifar(BUILT_UP_TO + 1, 48),
            ),
            (nasnet_searchspace::named::nasnet_a(), aux),
            (
                nasnet_searchspace::named::nasnet_a(),
                NasNetConfig::mobile(),
            ),
            (nasnet_searchspace::named::nasnet_a(), NasNetConfig::large()),
            (
                nasnet_searchspace::named::amoebanet_a(),
                cifar(BUILT_UP_TO + 1, 48),
            ),
        ];
        for (g, cfg) in cases {
            for cells_per_stack in [BUILT_UP_TO + 1, BUILT_UP_TO + 3] {
                let mut cfg = cfg.clone();
                cfg.cells_per_stack = cells_per_stack;
                let built = built_counts(&g, &cfg).unwrap();
                assert_eq!(model_counts(&g, &cfg).unwrap(), built, "{cfg:?}");
            }
        }
    }

    /// `--net 100000@24000` and `--net 5000@24` are refused from an estimate in constant
    /// memory: counting them by building them took gigabytes (and 2.6 s for the smaller).
    #[test]
    fn huge_networks_are_estimated_without_building_them() {
        let g = nasnet_searchspace::named::nasnet_a();
        for (n, p) in [(100_000, 24_000), (5000, 24)] {
            let e = estimate(&g, &cifar(n, p), 32, Use::Training).unwrap();
            let err = check_fits("huge", &e, Some(64 << 30)).unwrap_err();
            assert!(matches!(err, TrainError::TooLarge { .. }), "{err:?}");
        }
        // A wrong configuration is still refused as such.
        let mut bad = cifar(100_000, 24_000);
        bad.num_classes = 0;
        assert!(estimate(&g, &bad, 32, Use::Training).is_err());
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
