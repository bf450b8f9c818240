//! A weights file as `nasnet classify --weights` and `nasnet train --weights` read it:
//! safetensors, a PyTorch zip checkpoint or a legacy (2017-2018) pickled `.pth`, through
//! `nasnet_cells::load_state_dict`, whose legacy-pickle reader is this repository's own code.

use candle_core::Device;

use crate::scratch;

/// Writes the input as one weights file and loads it. Accepted: it loads as a state dict.
pub fn weights(data: &[u8]) -> bool {
    let dir = scratch::fresh("weights");
    let path = scratch::put(&dir, "weights.pth", data);
    nasnet_cells::load_state_dict(&path, &Device::Cpu).is_ok()
}
