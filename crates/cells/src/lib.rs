//! nasnet-cells: candle operations, cells and NASNet models.
pub mod kernels;
