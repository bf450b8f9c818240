//! Each op on the route [`route`] picks for its input: the custom CPU ops (`cpu`), the custom
//! CUDA kernels (the same custom ops, for the depthwise convs and pools) or the device-generic
//! compositions (`generic`). The layers hold a [`Kernels`] fixed when they were built and call
//! these; the public functions of `kernels` call them with the process defaults.

use candle_core::{Result, Tensor};

use super::checks::check_pointwise_args;
use super::cpu;
use super::generic;
use super::geometry::{AvgPoolCount, ConvGeom, Padding2d};
use super::route::{route, Kernels, Route};

impl Kernels {
    /// The route of ops on `x`.
    pub(crate) fn route_of(self, x: &Tensor) -> Route {
        route(self, x.device())
    }

    /// Depthwise conv of `x`, or of `relu(x)` when `relu` (see [`super::depthwise_conv2d`] and
    /// [`super::relu_depthwise_conv2d`]).
    pub(crate) fn depthwise_conv2d(
        self,
        x: &Tensor,
        w: &Tensor,
        geom: ConvGeom,
        relu: bool,
    ) -> Result<Tensor> {
        match self.route_of(x) {
            Route::Generic => {
                let (stride, dilation, pad) = geom;
                generic::depthwise(x, w, stride, dilation, pad, relu)
            }
            Route::Cpu | Route::Cuda => cpu::depthwise_conv2d(x, w, geom, relu),
        }
    }

    /// A separable half, one node on the CPU's custom route for f32/f64 (see
    /// [`super::relu_separable_conv2d`]); elsewhere the two ops composed.
    pub(crate) fn relu_separable_conv2d(
        self,
        x: &Tensor,
        k: &Tensor,
        w: &Tensor,
        geom: ConvGeom,
    ) -> Result<Tensor> {
        if self.route_of(x) == Route::Cpu && !cpu::is_half(x.dtype()) {
            return cpu::relu_separable_conv2d(x, k, w, geom);
        }
        let mid = self.depthwise_conv2d(x, k, geom, true)?;
        self.pointwise_conv2d(&mid, w, false)
    }

    /// 1x1 conv of `x`, or of `relu(x)` when `relu` (see [`super::pointwise_conv2d`] and
    /// [`super::relu_pointwise_conv2d`]).
    pub(crate) fn pointwise_conv2d(self, x: &Tensor, w: &Tensor, relu: bool) -> Result<Tensor> {
        match self.route_of(x) {
            Route::Cpu => Self::cpu_pointwise(x, w, relu),
            Route::Cuda | Route::Generic => generic::pointwise(x, w, relu),
        }
    }

    /// The CPU custom route of a 1x1 conv: the custom op, or for half types candle's ReLU and
    /// batched matmul (a GEMM in 16 bits is what candle offers; the custom op is f32/f64).
    fn cpu_pointwise(x: &Tensor, w: &Tensor, relu: bool) -> Result<Tensor> {
        if !cpu::is_half(x.dtype()) {
            return cpu::pointwise_conv2d(x, w, relu);
        }
        check_pointwise_args(x, w)?;
        let x = if relu { x.relu()? } else { x.clone() };
        generic::pointwise_conv2d(&x, w)
    }

    /// Padded average pool (see [`super::avg_pool2d`]).
    pub(crate) fn avg_pool2d(
        self,
        x: &Tensor,
        kernel: (usize, usize),
        stride: usize,
        pad: Padding2d,
        count: AvgPoolCount,
    ) -> Result<Tensor> {
        match self.route_of(x) {
            Route::Generic => generic::avg_pool2d(x, kernel, stride, pad, count),
            Route::Cpu | Route::Cuda => cpu::avg_pool2d(x, kernel, stride, pad, count),
        }
    }

    /// Padded max pool (see [`super::max_pool2d`]).
    pub(crate) fn max_pool2d(
        self,
        x: &Tensor,
        kernel: (usize, usize),
        stride: usize,
        pad: Padding2d,
    ) -> Result<Tensor> {
        match self.route_of(x) {
            Route::Generic => generic::max_pool2d(x, kernel, stride, pad),
            Route::Cpu | Route::Cuda => cpu::max_pool2d(x, kernel, stride, pad),
        }
    }

    /// `max(x, 0)` with the gradient `dy * (x > 0)` (candle's `relu` for CPU half types).
    pub(crate) fn relu(self, x: &Tensor) -> Result<Tensor> {
        match self.route_of(x) {
            Route::Cpu => cpu::relu(x),
            Route::Cuda | Route::Generic => generic::relu(x),
        }
    }

    /// Train-mode batch norm of `x` (N, C, H, W) with affine `weight`, `bias` (C): the output
    /// and the batch mean and biased variance per channel (C, detached), for the running
    /// statistics. The fused custom op for CPU f32/f64 on the custom route, plain ops elsewhere.
    pub(crate) fn batch_norm_train(
        self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        if self.route_of(x) == Route::Cpu && cpu::batch_norm_supported(x) {
            let (y, stats) = cpu::batch_norm_train(x, weight, bias, eps)?;
            return with_stats(y, stats, x);
        }
        generic::batch_norm_train(x, weight, bias, eps)
    }

    /// `batch_norm_train(relu_separable_conv2d(x, k, w, ..), gamma, beta, eps)` for
    /// `params = [w, gamma, beta]`: one graph node on the CPU's custom route for f32/f64 (see
    /// `cpu::separable`), the two nodes elsewhere; the result is the same either way.
    pub(crate) fn relu_separable_conv2d_bn(
        self,
        x: &Tensor,
        k: &Tensor,
        params: [&Tensor; 3],
        eps: f64,
        geom: ConvGeom,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        if self.route_of(x) == Route::Cpu && cpu::batch_norm_supported(x) {
            let (y, stats) = cpu::relu_separable_conv2d_bn(x, k, params, eps, geom)?;
            return with_stats(y, stats, x);
        }
        let [w, gamma, beta] = params;
        let mid = self.relu_separable_conv2d(x, k, w, geom)?;
        self.batch_norm_train(&mid, gamma, beta, eps)
    }
}

/// A fused BN's output with its statistics as tensors (f64, per channel) on `x`'s device.
fn with_stats(y: Tensor, stats: cpu::BnStats, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let c = stats.mean.len();
    let mean = Tensor::from_vec(stats.mean, c, x.device())?;
    let var = Tensor::from_vec(stats.var, c, x.device())?;
    Ok((y, mean, var))
}
