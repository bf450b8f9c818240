//! When a loss means the run has diverged, in training and in evaluation.
//!
//! The rule: a loss diverged when it is not a finite number, or when it is above
//! [`divergence_limit`], `100 x ln(classes)` (at least `100 x ln 2`). A freshly initialised
//! classifier's cross-entropy is about `ln(classes)` (2.3 for 10 classes), the auxiliary head adds
//! at most 0.4 of that again, and a healthy run only goes down from there; a loss a hundred times
//! the starting one means the weights have blown up (`--lr 1e6` reaches 1e20 within a few steps)
//! and later steps only produce NaN. The same limit applies to the mean loss of an evaluation,
//! whose cross-entropy starts at the same value.

use thiserror::Error;

/// Factor over `ln(classes)` above which a loss has exploded.
pub(crate) const DIVERGENCE_FACTOR: f64 = 100.0;

/// A loss that broke the rule of this module.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("the {what} is {loss}, {}", self.reason())]
pub struct Divergence {
    /// Which loss: `training loss`, `val loss`, `test loss`.
    pub what: String,
    /// Its value.
    pub loss: f64,
    /// The limit it was held to.
    pub limit: f64,
    /// Classes of the model (the limit's base).
    pub classes: usize,
}

impl Divergence {
    fn reason(&self) -> String {
        if self.loss.is_finite() {
            format!(
                "above the divergence limit {:.0} ({DIVERGENCE_FACTOR} x ln {} classes; a fresh model starts near {:.2})",
                self.limit,
                self.classes,
                (self.classes.max(2) as f64).ln()
            )
        } else {
            "not a finite number".into()
        }
    }
}

/// The largest loss a healthy run of a `classes`-way classifier reaches: `100 x ln(classes)`,
/// with at least 2 classes.
pub fn divergence_limit(classes: usize) -> f64 {
    DIVERGENCE_FACTOR * (classes.max(2) as f64).ln()
}

/// `Err` when `loss` (the `what` of a `classes`-way classifier) is not finite or above
/// [`divergence_limit`].
pub fn check_loss(what: &str, loss: f64, classes: usize) -> Result<(), Divergence> {
    let limit = divergence_limit(classes);
    if loss.is_finite() && loss <= limit {
        return Ok(());
    }
    Err(Divergence {
        what: what.to_string(),
        loss,
        limit,
        classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_losses_pass_and_exploded_ones_do_not() {
        // A fresh 10-class model (with an auxiliary head) and a well trained one pass.
        assert!(check_loss("training loss", 1.4 * 10f64.ln(), 10).is_ok());
        assert!(check_loss("training loss", 0.01, 10).is_ok());
        assert!(check_loss("training loss", 1000f64.ln() * 3.0, 1000).is_ok());
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e20, 231.0] {
            let e = check_loss("training loss", bad, 10).unwrap_err();
            assert_eq!(e.loss.to_bits(), bad.to_bits());
        }
        let e = check_loss("val loss", 1e20, 10).unwrap_err();
        assert!(
            e.to_string().contains("above the divergence limit 230"),
            "{e}"
        );
        let e = check_loss("val loss", f64::NAN, 1).unwrap_err();
        assert!(e.to_string().contains("not a finite number"), "{e}");
    }
}
