//! Reproducible randomness for training from scratch: candle's CPU generator cannot be seeded
//! (`Device::set_seed` fails on CPU in candle 0.11), so a seeded model draws its initial weights
//! and its drop-path and dense-dropout masks here instead, from ChaCha8 streams derived from one
//! seed.
//!
//! Each parameter gets its own stream, keyed by the seed and the parameter's name, so its
//! initial value does not depend on the order layers are built in or on which other
//! parameters exist: the same seed gives `cell_3.comb_iter_0_left` the same weights whether the
//! model has 2 or 6 cells per stack.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use candle_core::Shape;
use candle_nn::init::NormalOrUniform;
use candle_nn::Init;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// FNV-1a of `bytes`, a stable (platform- and version-independent) hash for deriving streams.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The stream for `what` (a parameter name, or a purpose such as drop path) under `seed`.
pub(crate) fn stream(seed: u64, what: &str) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&fnv1a(what.as_bytes()).to_le_bytes());
    key[16..24].copy_from_slice(&(what.len() as u64).to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// A standard normal draw (Box-Muller; one of the pair is enough here).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // 1 - U keeps the logarithm's argument in (0, 1].
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Values of a `shape` tensor initialised by `init`, with the same distributions as candle's
/// `Init::var` (Kaiming's fan and gain included).
pub(crate) fn draw(init: Init, shape: &Shape, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let n = shape.elem_count();
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| lo + (up - lo) * rng.random::<f64>();
    match init {
        Init::Const(v) => vec![v; n],
        Init::Randn { mean, stdev } => (0..n).map(|_| mean + stdev * normal(rng)).collect(),
        Init::Uniform { lo, up } => (0..n).map(|_| uniform(rng, lo, up)).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => (0..n).map(|_| std * normal(rng)).collect(),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..n).map(|_| uniform(rng, -bound, bound)).collect()
                }
            }
        }
    }
}

/// Training progress and the random stream of ScheduledDropPath and of the classifier's dense
/// dropout, shared by every cell of a model so that one call moves (or seeds) them all.
///
/// Once seeded, the stream restarts from (seed, progress) whenever the progress is set: the
/// trainer sets it before every step, so a step's masks are a function of the seed and the step
/// alone, and a resumed run draws exactly the masks the uninterrupted run would have.
#[derive(Debug)]
pub(crate) struct DropPathState {
    /// `min(1, step / total_steps)` as f64 bits.
    progress: AtomicU64,
    /// The seed and the mask stream once the model is seeded; candle's unseeded generator before.
    rng: Mutex<Option<(u64, ChaCha8Rng)>>,
}

impl DropPathState {
    pub fn new() -> Self {
        DropPathState {
            progress: AtomicU64::new(0f64.to_bits()),
            rng: Mutex::new(None),
        }
    }

    pub fn progress(&self) -> f64 {
        f64::from_bits(self.progress.load(Ordering::Relaxed))
    }

    /// Sets the progress and, when seeded, restarts the mask stream at (seed, progress).
    pub fn set_progress(&self, p: f64) {
        self.progress.store(p.to_bits(), Ordering::Relaxed);
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seed, _)) = *rng {
            *rng = Some((seed, Self::stream_at(seed, p)));
        }
    }

    fn stream_at(seed: u64, progress: f64) -> ChaCha8Rng {
        stream(seed, &format!("drop_path@{:016x}", progress.to_bits()))
    }

    /// Switches the masks to streams derived from `seed`, starting at the current progress.
    pub fn seed(&self, seed: u64) {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        *rng = Some((seed, Self::stream_at(seed, self.progress())));
    }

    /// `n` uniform draws in [0, 1) from the seeded stream, or None when the model is unseeded.
    pub fn uniform(&self, n: usize) -> Option<Vec<f32>> {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        rng.as_mut()
            .map(|(_, rng)| (0..n).map(|_| rng.random::<f32>()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::init::{FanInOut, NonLinearity};

    #[test]
    fn streams_depend_on_seed_and_name_only() {
        let a: Vec<u32> = (0..4)
            .map(|_| stream(7, "conv0.conv.weight").random())
            .collect();
        let mut s = stream(7, "conv0.conv.weight");
        let b: Vec<u32> = (0..4).map(|_| s.random()).collect();
        // A stream is a function of (seed, name): recreating it restarts it.
        assert_eq!(a[0], b[0]);
        assert!(a.iter().all(|&x| x == a[0]));
        assert_ne!(b[0], b[1]);
        assert_eq!(
            stream(7, "x").random::<u64>(),
            stream(7, "x").random::<u64>()
        );
        assert_ne!(
            stream(7, "x").random::<u64>(),
            stream(8, "x").random::<u64>()
        );
        assert_ne!(
            stream(7, "x").random::<u64>(),
            stream(7, "y").random::<u64>()
        );
    }

    #[test]
    fn kaiming_normal_has_the_fan_in_variance() {
        let init = Init::Kaiming {
            dist: NormalOrUniform::Normal,
            fan: FanInOut::FanIn,
            non_linearity: NonLinearity::ReLU,
        };
        let shape = Shape::from((64, 32, 3, 3));
        let v = draw(init, &shape, &mut stream(1, "w"));
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let want = 2.0 / (32.0 * 9.0);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var / want - 1.0).abs() < 0.05, "variance {var} vs {want}");
    }

    #[test]
    fn uniform_and_constant_inits() {
        let shape = Shape::from(1000);
        let u = draw(
            Init::Uniform { lo: -0.5, up: 2.0 },
            &shape,
            &mut stream(3, "u"),
        );
        assert!(u.iter().all(|&x| (-0.5..2.0).contains(&x)));
        assert!(u.iter().any(|&x| x < 0.0) && u.iter().any(|&x| x > 1.5));
        assert_eq!(
            draw(Init::Const(0.25), &shape, &mut stream(3, "c")),
            vec![0.25; 1000]
        );
    }
}
