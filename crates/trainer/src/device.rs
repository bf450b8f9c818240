//! The device a model trains on: nasnet-cells' typed choice ([`DeviceChoice`], parsed from `cpu`,
//! `cuda`, `cuda:N`, `metal` or `metal:N`, checked against the build before anything starts and
//! opened when training begins), re-exported where the trainer's configurations name it.

pub use nasnet_cells::DeviceChoice;
