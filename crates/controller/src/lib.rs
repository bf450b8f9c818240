//! nasnet-controller: the paper's RL controller (a one-layer LSTM emitting the 2 x 5B decisions,
//! trained with PPO or REINFORCE) and the search strategies a search loop drives through one
//! interface ([`Strategy`]): `ppo`, `reinforce`, `random` and regularized `evolution`.
//!
//! The controller always runs on the CPU in f32: it is tiny (about 120k parameters for the
//! paper's space at 100 units) and per-child, so a GPU would only add transfer latency.
//!
//! Driving a strategy (see [`Strategy`] for resuming and parallel workers):
//! ```
//! use nasnet_controller::{make_strategy, StrategyConfig, StrategyKind};
//! use nasnet_searchspace::SearchSpace;
//!
//! let kind: StrategyKind = "ppo".parse()?;
//! let mut s = make_strategy(kind, SearchSpace::nasnet(), &StrategyConfig::default(), 7)?;
//! let p = s.propose(0)?; // train p.genotype somewhere, then:
//! s.observe(p.trial, &p.genotype, 0.91)?;
//! assert_eq!(s.observed(), 1);
//! # Ok::<(), nasnet_controller::ControllerError>(())
//! ```

#![warn(missing_docs)]

mod adam;
mod config;
mod controller;
mod error;
mod matmul;
mod policy;
mod rng;
pub mod search_loop;
mod strategy;

mod enas;

pub use config::{
    ControllerConfig, EvolutionConfig, HeadSharing, StrategyConfig, StrategyKind, MAX_HIDDEN_SIZE,
};
pub use controller::{Controller, Evaluation, Sampled};
pub use error::{ControllerError, WeightsError};
pub use policy::{Algorithm, EmaBaseline, Experience, PolicyTrainer, UpdateStats};
pub use strategy::{
    load_strategy, make_strategy, EvolutionStrategy, Member, Proposal, RandomStrategy, RlStrategy,
    Strategy, STATE_FILE, STATE_FORMAT_VERSION, WEIGHTS_FILE,
};
