//! The hand-set macro-architecture around the searched cells
//! (docs/semantics.md#the-network-around-the-cells): stem, stack
//! sizes, filter counts, head, regularisation and batch-norm settings, with the released
//! configurations as named constructors.

use serde::{Deserialize, Serialize};

use crate::error::CellsError;
use crate::kernels::KernelPath;

/// Number of reduction cells between the three stacks (fixed by the paper's design).
pub(crate) const NUM_REDUCTION_CELLS: usize = 2;

/// Number of stem cells after `conv0` in the ImageNet stem.
pub(crate) const NUM_IMAGENET_STEM_CELLS: usize = 2;

/// Which stem sits before the first stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StemKind {
    /// A 3x3 stride-1 SAME conv and BN (no ReLU); small images keep their resolution.
    Cifar,
    /// `conv0` (3x3 stride 2 VALID, BN) then two reduction cells `cell_stem_0/1` (x4 smaller).
    ImageNet,
}

/// `N @ P`: N normal cells per stack, P = 24 F filters at the network's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSize {
    /// Normal cells per stack (N).
    pub cells_per_stack: usize,
    /// Filters F of the first stack's cells.
    pub filters: usize,
}

impl NetSize {
    /// P = 24 F, the paper's name for the size (the last stack's 6 x 4F output filters).
    pub fn penultimate_filters(&self) -> usize {
        24 * self.filters
    }
}

impl std::fmt::Display for NetSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.cells_per_stack, self.penultimate_filters())
    }
}

/// Parses the paper's `N@P` notation (`6@768`: N = 6, F = 768 / 24 = 32).
pub fn parse_net(text: &str) -> Result<NetSize, CellsError> {
    let err = |reason: &str| CellsError::ParseNet {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let (n, p) = text
        .trim()
        .split_once('@')
        .ok_or_else(|| err("expected N@P, e.g. 6@768"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| err("N is not a whole number"))?;
    let p: usize = p
        .trim()
        .parse()
        .map_err(|_| err("P is not a whole number"))?;
    if n == 0 {
        return Err(err("N must be at least 1"));
    }
    if p == 0 || !p.is_multiple_of(24) {
        return Err(err("P must be a positive multiple of 24 (P = 24 F)"));
    }
    Ok(NetSize {
        cells_per_stack: n,
        filters: p / 24,
    })
}

/// Everything about a NASNet model except its cells.
///
/// Fields are public so that callers can start from a preset and change what they need; call
/// [`NasNetConfig::validate`] (done by `NasNet::new`) to check the result. Non-exhaustive, so
/// that a new setting is not a breaking change: build one from a preset
/// ([`NasNetConfig::cifar`], [`NasNetConfig::imagenet`], [`NasNetConfig::mobile`], ...), not
/// with a struct literal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NasNetConfig {
    /// The stem before the first stack.
    pub stem: StemKind,
    /// Output filters of the stem conv `conv0` (CIFAR: 3 F; ImageNet: 32 x stem multiplier).
    pub stem_filters: usize,
    /// Normal cells per stack (N of N@P); there are three stacks.
    pub cells_per_stack: usize,
    /// F: filters of the first stack's cells; each reduction multiplies it by the scaling rate.
    pub filters: usize,
    /// Filter multiplier at each reduction (2 in every released model).
    pub filter_scaling_rate: f64,
    /// Whether the first normal cell after a reduction takes, as its older input, the cell
    /// before the reduction cell's input (Large) rather than the reduction cell's input.
    pub skip_reduction_layer_input: bool,
    /// Classifier outputs.
    pub num_classes: usize,
    /// Image channels (3 for RGB, 1 for grayscale data such as Fashion-MNIST).
    pub in_channels: usize,
    /// Training image size; fixes the auxiliary head's last kernel and is the default size for
    /// mult-add counts.
    pub image_size: usize,
    /// Keep probability of the dropout before the classifier (training only).
    pub dense_dropout_keep_prob: f64,
    /// Whether to build the auxiliary head (used in training only, loss weight 0.4).
    pub aux_head: bool,
    /// Final keep probability of ScheduledDropPath for the last cell (1.0 disables it).
    pub drop_path_keep_prob: f64,
    /// Batch-norm epsilon.
    pub bn_eps: f64,
    /// Batch-norm momentum in PyTorch's convention: `running = (1 - m) running + m batch`
    /// (TF's decay d is m = 1 - d).
    pub bn_momentum: f64,
    /// timm-compatible mode: stride-2 average pools count their zero padding
    /// (docs/semantics.md#the-ports-stride-2-average-pool).
    pub avg_pool_count_pad_stride2: bool,
    /// The CPU kernel path this model's layers run on, fixed when it is built; `None` (the
    /// presets' value) takes the process default, `kernels::kernel_path()`. Not written when
    /// `None`, so configs saved before the field existed and after read the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_path: Option<KernelPath>,
}

impl NasNetConfig {
    /// NASNet-A for CIFAR-10 at `N@P` (`cifar(6, 768)` is the paper's 6@768): CIFAR stem with
    /// 3 F filters, 10 classes, auxiliary head on, drop path 0.6 (ramped in over the run, see
    /// `NasNet::set_drop_path_progress`), BN eps 1e-5 / momentum 0.1, no dense dropout (TF-slim
    /// `cifar_config`).
    pub fn cifar(cells_per_stack: usize, penultimate_filters: usize) -> Result<Self, CellsError> {
        let size = parse_net(&format!("{cells_per_stack}@{penultimate_filters}"))?;
        Ok(Self::cifar_size(size))
    }

    /// [`NasNetConfig::cifar`] from an already parsed size.
    pub fn cifar_size(size: NetSize) -> Self {
        NasNetConfig {
            stem: StemKind::Cifar,
            stem_filters: 3 * size.filters,
            cells_per_stack: size.cells_per_stack,
            filters: size.filters,
            filter_scaling_rate: 2.0,
            skip_reduction_layer_input: false,
            num_classes: 10,
            in_channels: 3,
            image_size: 32,
            dense_dropout_keep_prob: 1.0,
            aux_head: true,
            drop_path_keep_prob: 0.6,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
            avg_pool_count_pad_stride2: false,
            kernel_path: None,
        }
    }

    /// An ImageNet-stem model of any size: `conv0` with `32 x stem_multiplier` filters, BN eps 1e-3
    /// and momentum 0.0003 (TF decay 0.9997), dense dropout keep 0.5, 1000 classes, no auxiliary
    /// head (the public ports have none).
    pub fn imagenet(size: NetSize, stem_multiplier: f64, image_size: usize) -> Self {
        NasNetConfig {
            stem: StemKind::ImageNet,
            stem_filters: (32.0 * stem_multiplier) as usize,
            cells_per_stack: size.cells_per_stack,
            filters: size.filters,
            filter_scaling_rate: 2.0,
            skip_reduction_layer_input: false,
            num_classes: 1000,
            in_channels: 3,
            image_size,
            dense_dropout_keep_prob: 0.5,
            aux_head: false,
            drop_path_keep_prob: 1.0,
            bn_eps: 1e-3,
            bn_momentum: 0.0003,
            avg_pool_count_pad_stride2: false,
            kernel_path: None,
        }
    }

    /// NASNet-A Mobile, 4@1056 at 224 x 224 (stem multiplier 1: `conv0` has 32 filters), the
    /// layout of pretrainedmodels' `nasnetamobile`.
    pub fn mobile() -> Self {
        Self::imagenet(
            NetSize {
                cells_per_stack: 4,
                filters: 44,
            },
            1.0,
            224,
        )
    }

    /// NASNet-A Large, 6@4032 at 331 x 331 (stem multiplier 3, skip_reduction_layer_input,
    /// drop path 0.7), with TF's average pools; see [`NasNetConfig::large_timm`] for timm's.
    pub fn large() -> Self {
        let mut cfg = Self::imagenet(
            NetSize {
                cells_per_stack: 6,
                filters: 168,
            },
            3.0,
            331,
        );
        cfg.skip_reduction_layer_input = true;
        cfg.drop_path_keep_prob = 0.7;
        cfg
    }

    /// [`NasNetConfig::large`] with timm's stride-2 average pools (zero padding counted), needed
    /// to reproduce timm's `nasnetalarge` logits from its weights.
    pub fn large_timm() -> Self {
        let mut cfg = Self::large();
        cfg.avg_pool_count_pad_stride2 = true;
        cfg
    }

    /// The paper's ImageNet "5@1538" model. 1538 is not a multiple of 24; F = 64 (P = 1536) is
    /// used. Stem multiplier 3 and 299 x 299 input are this crate's choice: the paper does not
    /// publish this configuration in full, and the result (12,263,416 parameters, 2.69 G
    /// mult-adds at 299) is not checked against the paper's table.
    pub fn imagenet_5_1538() -> Self {
        Self::imagenet(
            NetSize {
                cells_per_stack: 5,
                filters: 64,
            },
            3.0,
            299,
        )
    }

    /// The paper's ImageNet 7@1920 model (F = 80); stem multiplier 3 and 299 x 299 input are
    /// this crate's choice, as for [`NasNetConfig::imagenet_5_1538`] (24,613,292 parameters,
    /// 5.37 G mult-adds at 299, not checked against the paper).
    pub fn imagenet_7_1920() -> Self {
        Self::imagenet(
            NetSize {
                cells_per_stack: 7,
                filters: 80,
            },
            3.0,
            299,
        )
    }

    /// Sets the number of classes.
    pub fn with_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// Turns the auxiliary head on or off.
    pub fn with_aux_head(mut self, aux_head: bool) -> Self {
        self.aux_head = aux_head;
        self
    }

    /// Sets the input channels (1 for grayscale).
    pub fn with_in_channels(mut self, in_channels: usize) -> Self {
        self.in_channels = in_channels;
        self
    }

    /// Sets the training image size.
    pub fn with_image_size(mut self, image_size: usize) -> Self {
        self.image_size = image_size;
        self
    }

    /// Runs this model's layers on the CPU kernel path `path` whatever the process default
    /// (e.g. the generic path, to compare a model with the custom ops in one process).
    pub fn with_kernel_path(mut self, path: KernelPath) -> Self {
        self.kernel_path = Some(path);
        self
    }

    /// Changes N and F, keeping the stem multiplier's ratio for a CIFAR stem (3 F).
    pub fn with_net(mut self, size: NetSize) -> Self {
        if self.stem == StemKind::Cifar && self.stem_filters == 3 * self.filters {
            self.stem_filters = 3 * size.filters;
        }
        self.cells_per_stack = size.cells_per_stack;
        self.filters = size.filters;
        self
    }

    /// The `N@P` size of this configuration.
    pub fn net_size(&self) -> NetSize {
        NetSize {
            cells_per_stack: self.cells_per_stack,
            filters: self.filters,
        }
    }

    /// Filters of a cell at `scale` reductions from the first stack (negative for stem cells),
    /// `int(F * rate^scale)` as TF-slim computes it.
    pub fn filters_at(&self, scale: i32) -> usize {
        (self.filters as f64 * self.filter_scaling_rate.powi(scale)) as usize
    }

    /// Number of cells TF-slim's drop path schedule divides by: normal and reduction cells, plus
    /// the two stem cells on ImageNet (20 CIFAR 6@768, 16 Mobile, 22 Large).
    pub fn total_cells(&self) -> usize {
        let stem = match self.stem {
            StemKind::Cifar => 0,
            StemKind::ImageNet => NUM_IMAGENET_STEM_CELLS,
        };
        3 * self.cells_per_stack + NUM_REDUCTION_CELLS + stem
    }

    /// Spacing of normal-cell numbers between stacks: normal cell j of stack s is named
    /// `cell_{s * stride + j}`. The ports number by 6 (`cell_{6s + j}`: Mobile has cell_0..3,
    /// cell_6..9, cell_12..15; Large cell_0..17); for N > 6 this uses N so names never collide.
    pub fn cell_name_stride(&self) -> usize {
        self.cells_per_stack.max(6)
    }

    /// Checks that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<(), CellsError> {
        let bad = |s: String| Err(CellsError::Config(s));
        if self.cells_per_stack == 0 {
            return bad("cells_per_stack must be at least 1".into());
        }
        if self.filters == 0 || self.stem_filters == 0 || self.in_channels == 0 {
            return bad("filters, stem_filters and in_channels must be positive".into());
        }
        if self.num_classes == 0 {
            return bad("num_classes must be positive".into());
        }
        if !(self.filter_scaling_rate.is_finite() && self.filter_scaling_rate > 0.0) {
            return bad(format!(
                "filter_scaling_rate must be positive, got {}",
                self.filter_scaling_rate
            ));
        }
        if self.stem == StemKind::ImageNet && self.filters_at(-2) < 2 {
            return bad(format!(
                "F = {} gives fewer than 2 filters in cell_stem_0 (F / rate^2)",
                self.filters
            ));
        }
        for (name, p) in [
            ("dense_dropout_keep_prob", self.dense_dropout_keep_prob),
            ("drop_path_keep_prob", self.drop_path_keep_prob),
        ] {
            if !(p > 0.0 && p <= 1.0) {
                return bad(format!("{name} must be in (0, 1], got {p}"));
            }
        }
        if !(self.bn_eps >= 0.0 && (0.0..=1.0).contains(&self.bn_momentum)) {
            return bad(format!(
                "bn_eps must be >= 0 and bn_momentum in [0, 1] (got {}, {})",
                self.bn_eps, self.bn_momentum
            ));
        }
        if self.image_size == 0 {
            return bad("image_size must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_net_sizes() {
        let s = parse_net("6@768").unwrap();
        assert_eq!((s.cells_per_stack, s.filters), (6, 32));
        assert_eq!(s.to_string(), "6@768");
        assert!(parse_net("6@770").is_err());
        assert!(parse_net("0@768").is_err());
        assert!(parse_net("6x768").is_err());
    }

    #[test]
    fn total_cells_match_tf_slim() {
        assert_eq!(NasNetConfig::cifar(6, 768).unwrap().total_cells(), 20);
        assert_eq!(NasNetConfig::mobile().total_cells(), 16);
        assert_eq!(NasNetConfig::large().total_cells(), 22);
    }

    #[test]
    fn stem_cell_filters() {
        let m = NasNetConfig::mobile();
        assert_eq!(
            (m.filters_at(-2), m.filters_at(-1), m.filters_at(2)),
            (11, 22, 176)
        );
        let l = NasNetConfig::large();
        assert_eq!((l.filters_at(-2), l.filters_at(-1)), (42, 84));
    }
}
