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
        return .direct
    }
}
