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

    /// Winograd F(4x4, 3x3) against the direct kernel, forward and backward-data, 1 thread, same run
    /// (`bench --algorithms`, 02:57 UTC, one foreign core busy; time winograd / time direct, fwd and
    /// bwd-data): CIFAR ResNet-20 b128 16ch 32x32 1.09 / 1.13, 32ch 16x16 0.81 / 0.71, 64ch 8x8
    /// 0.45 / 0.45; ResNet-18 b16 64ch 56x56 0.49 / 0.54, 128ch 28x28 0.43 / 0.42, 256ch 14x14
    /// 0.57 / 0.53, 512ch 7x7 1.80 / 1.73; b1 64ch 0.52 / 0.49, 128ch 0.74 / 0.71, 256ch 14x14
    /// 1.69 / 1.63, 512ch 7x7 12.7 / 9.3. Two effects decide it:
    /// - 16 channels: the 36 GEMMs have a 16-long inner dimension and 16 (of 32) useful output
    ///   lanes per microkernel call, so the transforms dominate; the direct tap-reuse kernel wins.
    /// - The transformed weight (36·C·K floats, 4x the weight) is streamed once per block of tiles:
    ///   with few tiles per weight (deep layers, batch 1) it costs more than the arithmetic saved.
    ///   `C·K <= 1024 · tiles` separates the measured wins (ratio tiles·1024 / C·K >= 3) from the
    ///   losses (<= 0.25).
    static func winogradPays(_ s: Conv2dShape) -> Bool {
        let tiles = s.batch * ((s.outH + 3) / 4) * ((s.outW + 3) / 4)
        return s.inChannels >= 32 && s.outChannels >= 32 && s.inChannels * s.outChannels <= 1024 * tiles
    }
}
