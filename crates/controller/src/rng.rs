//! Counter-based randomness: every random choice a strategy makes for trial `t` comes from its own
//! ChaCha8 stream keyed by `(seed, t)`, so proposals do not depend on how many other trials were
//! proposed before, no RNG state has to be saved, and a restored strategy proposes exactly what
//! the original would have.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Stream reserved for the controller's weight initialisation (no trial uses this id).
pub(crate) const INIT_STREAM: u64 = u64::MAX;

/// The random stream for trial `trial` of a search seeded with `seed`.
pub(crate) fn trial_rng(seed: u64, trial: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(trial);
    rng
}

/// The random stream that initialises a controller's weights for `seed`.
pub(crate) fn init_rng(seed: u64) -> ChaCha8Rng {
    trial_rng(seed, INIT_STREAM)
}
