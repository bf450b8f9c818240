//! The loss and the accuracy: cross-entropy with label smoothing, correct predictions, and the
//! evaluation of a model on a whole dataset.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use nasnet_cells::NasNet;

use crate::data::Dataset;
use crate::divergence::check_loss;
use crate::error::{Result, TrainError};
use crate::loader::BatchStream;
use crate::metrics::EvalMetrics;

/// Mean cross-entropy of `logits` (batch, classes) against `targets` (u32, batch), with targets
/// smoothed as `(1 - s) onehot + s / classes` (TF's `label_smoothing`).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, smoothing: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&targets.unsqueeze(1)?, 1)?.neg()?.mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = logp.mean(D::Minus1)?.neg()?.mean_all()?;
    Ok(((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?)
}

/// Number of rows of `logits` whose arg-max is the target.
pub(crate) fn count_correct(logits: &Tensor, targets: &Tensor) -> Result<u64> {
    let pred = logits.argmax(D::Minus1)?;
    let hits = pred.eq(targets)?.to_dtype(DType::F32)?.sum_all()?;
    Ok(hits.to_scalar::<f32>()? as u64)
}

/// Loss and accuracy of `model` (inference mode) on `data`, normalised with `data.norm`. A mean
/// loss that diverged (see [`crate::divergence_limit`]) is [`TrainError::EvalDiverged`].
pub fn evaluate(
    model: &NasNet,
    data: &Arc<Dataset>,
    device: &Device,
    batch_size: usize,
) -> Result<EvalMetrics> {
    evaluate_with(
        |x| Ok(model.forward_t(x, false)?.logits),
        data,
        device,
        batch_size,
    )
}

/// [`evaluate`] with any eval-mode logits function, e.g. a compiled model's
/// (`nasnet_cells::CompiledNasNet::forward`).
pub fn evaluate_with(
    logits_of: impl Fn(&Tensor) -> Result<Tensor>,
    data: &Arc<Dataset>,
    device: &Device,
    batch_size: usize,
) -> Result<EvalMetrics> {
    let start = Instant::now();
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0u64, 0usize);
    let (c, h, w) = (data.channels, data.height, data.width);
    for batch in BatchStream::eval(data.clone(), batch_size, 2) {
        let n = batch.len();
        let x = Tensor::from_vec(batch.images, (n, c, h, w), device)?;
        let y = Tensor::from_vec(batch.labels, n, device)?;
        let logits = logits_of(&x)?;
        loss_sum += f64::from(cross_entropy(&logits, &y, 0.0)?.to_scalar::<f32>()?) * n as f64;
        correct += count_correct(&logits, &y)?;
        seen += n;
    }
    let secs = start.elapsed().as_secs_f64();
    if seen > 0 {
        check_loss("evaluation loss", loss_sum / seen as f64, data.classes())
            .map_err(TrainError::EvalDiverged)?;
    }
    Ok(EvalMetrics {
        loss: if seen > 0 {
            loss_sum / seen as f64
        } else {
            0.0
        },
        accuracy: if seen > 0 {
            correct as f64 / seen as f64
        } else {
            0.0
        },
        images: seen,
        images_per_sec: if secs > 0.0 { seen as f64 / secs } else { 0.0 },
    })
}
