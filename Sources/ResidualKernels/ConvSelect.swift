// Which algorithm computes which convolution pass. The rules come from the per-shape measurements in
// docs/Kernels.md ("Convolution"); every algorithm computes every shape it supports, so the table
// only decides speed.

extension ConvAlgorithm {
    /// The algorithm measured fastest for a shape and pass.
    public static func choose(_ s: Conv2dShape, _ pass: Pass) -> ConvAlgorithm {
        if s.groups != 1 { return .grouped }
        let pointwise = s.kernelH == 1 && s.kernelW == 1 && s.padH == 0 && s.padW == 0
        // 1x1 backward-weight is one long-k GEMM; the packed SGEMM beats the direct kernel's
        // per-tap jobs once C >= 128 (ResNet-18 downsampling: 209 vs 171 GFLOP/s at 128 -> 256), and
        // at C = 64 once O >= 128, where the direct kernel's 48-lane block pads dY to a multiple of
        // 48 in a serial copy (ResNet-50 conv2_x.expand 64 -> 256: 16% -> 49% of peak, ResNet-18
        // conv3_x.proj 64 -> 128: 34% -> 52%; 1 thread, same run). 64 -> 64 stays direct (54% vs 36%).
        if pointwise && pass == .backwardWeight && (s.inChannels >= 128 || s.outChannels >= 128) {
            return .gemm
        }
        if ConvAlgorithm.winograd.supports(s) && pass != .backwardWeight && winogradPays(s) { return .winograd }
        return .direct
    }

    /// Winograd F(4x4, 3x3) against the direct kernel, forward and backward-data, in one run
    /// (`bench --algorithms --threads 1,2`, 03:13 UTC, quiet for the training shapes, one foreign
    /// core during the batch-1 rows): time winograd / time direct, fwd then bwd-data, 1 and 2
    /// threads (docs/Kernels.md has the milliseconds):
    ///
    /// | layer | fwd t1 | fwd t2 | bwd-data t1 | bwd-data t2 |
    /// |---|---|---|---|---|
    /// | CIFAR b128 16ch 32x32 | 0.99 | 0.90 | 0.77 | 0.73 |
    /// | CIFAR b128 32ch 16x16 | 0.47 | 0.52 | 0.46 | 0.51 |
    /// | CIFAR b128 64ch 8x8 | 0.41 | 0.51 | 0.41 | 0.51 |
    /// | ResNet-18 b16 64ch 56x56 | 0.43 | 0.43 | 0.44 | 0.46 |
    /// | ResNet-18 b16 128ch 28x28 | 0.39 | 0.44 | 0.38 | 0.43 |
    /// | ResNet-18 b16 256ch 14x14 | 0.54 | 0.54 | 0.50 | 0.53 |
    /// | ResNet-18 b16 512ch 7x7 | 1.81 | 2.23 | 1.71 | 1.77 |
    /// | ResNet-18 b1 64ch | 0.43 | 0.64 | 0.43 | 0.47 |
    /// | ResNet-18 b1 128ch | 0.60 | 0.63 | 0.60 | 0.61 |
    /// | ResNet-18 b1 256ch 14x14 | 1.23 | 1.22 | 1.09 | 1.21 |
    /// | ResNet-18 b1 512ch 7x7 | 9.4 | 9.6 | 5.9 | 5.8 |
    ///
    /// Where it loses, the transformed weight (36·C·K floats, 4x the weight, 38 MB at 512 channels)
    /// is streamed once per block of tiles and is worth it only with enough tiles per weight:
    /// `C·K <= 1024 · tiles` separates the wins (tiles · 1024 / C·K >= 3) from the losses (<= 0.25).
    /// Not measured below 16 channels (the CIFAR stem, C = 3, stays direct), where the 36 GEMMs get thin.
    ///
    /// Since the transformed weight comes from a reused buffer (no page faults) and a weight over
    /// 16 MB is streamed once per call (64-tile blocks), Winograd also wins at 4096 channel pairs
    /// per tile once there are 64 tiles: ResNet-18 conv5_x at batch 16, process CPU time per call,
    /// 1 thread, loaded machine, winograd / direct: fwd 12.0-12.2 / 15.6-16.7 ms (0.73-0.76),
    /// bwd-data 13.0-13.3 / 18.3-18.5 ms (0.71-0.72); conv4_x at batch 1 (16 tiles, the same
    /// 4096 pairs per tile) still loses forward (1.27-1.32).
    static func winogradPays(_ s: Conv2dShape, tilesPerWeight: Int = 1024) -> Bool {
        let tiles = s.batch * ((s.outH + 3) / 4) * ((s.outW + 3) / 4)
        let pairs = s.inChannels * s.outChannels
        return s.inChannels >= 16 && s.outChannels >= 16
            && (pairs <= tilesPerWeight * tiles || (tiles >= 64 && pairs <= 4096 * tiles))
    }

    /// The forward algorithm for a ``ConvForwardPlan``, which transforms Winograd's weight once, so
    /// the weight transform (0.8 ms per call for 256 x 256 channels) is off the per-call path and
    /// Winograd pays with 4x fewer tiles per weight: it then also takes ResNet-18 conv4_x at batch 1
    /// (16 tiles, 256 channels). `infer resnet18 b1`, 4 alternating runs, one foreign core busy:
    /// 14.63-14.87 ms (1 thread) and 14.73-14.75 ms (2) against 14.87-14.99 and 15.00-15.47 with the
    /// unplanned rule. conv5_x at batch 1 (4 tiles, 38 MB of transformed weight) stays direct.
    static func chooseForPlan(_ s: Conv2dShape) -> ConvAlgorithm {
        let alg = choose(s, .forward)
        if alg == .direct && ConvAlgorithm.winograd.supports(s) && winogradPays(s, tilesPerWeight: 4096) {
            return .winograd
        }
        return alg
    }
}
