//! The one trial runner both workers call (the local one on a job file, the queue one on a
//! Redis entry): trains a trial's genotype with the trainer library's [`train_child`] and turns
//! the result, or any error, into the trial's outcome, so a child that fails is a failed trial,
//! never a failed worker.

use std::time::Instant;

use nasnet_controller::search_loop::{TrialOutcome, TrialSpec};
use nasnet_trainer::progress::ProgressHook;
use nasnet_trainer::{train_child, ChildSpec};

/// Trains `spec`'s genotype under `child`, reporting to `hook`; a child error is a failed
/// outcome (with the parameter count when the child was built). The outcome's `attempts` is 1:
/// the caller knows which start this was.
pub fn run_trial(child: &ChildSpec, spec: &TrialSpec, hook: &mut dyn ProgressHook) -> TrialOutcome {
    let start = Instant::now();
    match train_child(child, &spec.genotype, hook) {
        Ok(result) => TrialOutcome::ok(spec.trial, result.reward, result.params, result.seconds),
        Err(e) => {
            let params = e.params();
            let message = crate::input::message(&anyhow::Error::new(e));
            let mut outcome =
                TrialOutcome::failed(spec.trial, start.elapsed().as_secs_f64(), message);
            outcome.params = params;
            outcome
        }
    }
}
