//! Custom candle kernels NASNet needs and candle lacks (REFERENCE.md §9): depthwise convolution and
//! SAME-padded pooling, each with a backward. Filled in by the kernels work.
