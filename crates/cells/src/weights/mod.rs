//! Weights as users download them: [`load_state_dict`] reads safetensors, PyTorch's zip archive
//! and PyTorch's legacy pickle stream (through the crate's own bounded pickle parser, `pickle`)
//! into named tensors, and [`detect_port`] tells which public port a state dict comes from.
//!
//! Re-exported at the crate root; the submodules are the crate's own.

mod load;
mod pickle;
mod port;

pub use load::load_state_dict;
pub use port::{detect_port, Port};
