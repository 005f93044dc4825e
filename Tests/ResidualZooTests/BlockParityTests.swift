import Testing
import Foundation
import Residual
import ResidualTestSupport

/// The zoo's residual blocks against torchvision's `BasicBlock` / `Bottleneck` (and the paper's
/// option A and plain blocks), loaded by torchvision's names, in eval and train mode: output within
/// 1e-4, the input gradient and every parameter gradient element by element within 1e-3, and the
/// running statistics after the train-mode forward within 1e-4. The generator redraws each case
/// until no ReLU input is within 1e-4 of the kink and checks that float32-sized perturbations move
/// nothing by more than 1e-4 (stored as `sensitivity`), so these tolerances are well conditioned.
@Suite struct BlockParityTests {
    static let cases = try! ReferenceCases(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../ResidualNNTests/Fixtures/layers.safetensors").standardized)

    static let names = ["block_basic_A_s2", "block_basic_A_s1", "block_basic_none_s2", "block_basic_B_s2",
                        "block_basic_C_s1", "block_bottleneck_B_s2_v1", "block_bottleneck_B_s2_v15",
                        "block_bottleneck_B_s1_grow", "block_bottleneck_A_s2_v1", "block_bottleneck_C_s1"]

    static func makeBlock(_ q: [String: Any]) -> any Layer {
        let shortcut: ShortcutOption = switch q["shortcut"] as! String {
        case "A": .a
        case "B": .b
        case "C": .c
        default: .none
        }
        let placement: StridePlacement = (q["v15"] as? Bool ?? false) ? .middleConvolution : .firstConvolution
        let config = BlockConfig(shortcut: shortcut, stridePlacement: placement)
        let (cin, planes, stride) = (q["cin"] as! Int, q["planes"] as! Int, q["stride"] as! Int)
        return q["kind"] as! String == "bottleneck" ? Bottleneck(cin, planes, stride: stride, config)
            : BasicBlock(cin, planes, stride: stride, config)
    }

    @Test(arguments: names)
    func matchesTorchvision(_ name: String) throws {
        let f = Self.cases, q = f.parameters(name)
        #expect((q["sensitivity"] as! Double) < 1e-4)
        let block = Self.makeBlock(q)
        var state: [String: Tensor] = [:]
        for (k, t) in f.tensors where k.hasPrefix("\(name).state.") { state[String(k.dropFirst("\(name).state.".count))] = t }
        try block.loadStateDict(state)   // strict: torchvision's names, nothing missing or extra
        // Inside a network a block's input is channels-last (the stem's convolution produces it);
        // standard-layout input takes the ops' other path. Both must match.
        for (mode, layout) in [("eval", Tensor.Layout.standard), ("train", .standard), ("eval", .channelsLast), ("train", .channelsLast)] {
            try block.loadStateDict(state)
            for p in block.parameters { p.zeroGrad() }
            block.train(mode == "train")
            let tape = Tape()
            let x = tape.watch(f["\(name).input"].converted(to: layout))
            let y = tape.record { block(x) }
            let e = relativeError(y, f["\(name).\(mode).output"])
            logParity("\(name).\(mode).\(layout).output", e)
            #expect(e < 1e-4, "\(name) \(mode) \(layout) output: \(e)")
            let gx = tape.gradients(of: y, withRespectTo: [x], seed: f["\(name).\(mode).grad_output"])[0]
            var worst = relativeError(gx, f["\(name).\(mode).grad_input"])
            #expect(worst < 1e-3, "\(name) \(mode) \(layout) grad_input: \(worst)")
            for (pname, p) in block.namedParameters() {
                let ge = relativeError(p.grad ?? Tensor(zeros: p.shape), f["\(name).\(mode).grad.\(pname)"])
                #expect(ge < 1e-3, "\(name) \(mode) \(layout) grad \(pname): \(ge)")
                worst = max(worst, ge)
            }
            logParity("\(name).\(mode).\(layout).gradients", worst)
            if mode == "train" {
                var worstStat: Float = 0
                for (bname, b) in block.namedBuffers() where bname.contains("running") {
                    let se = relativeError(b.value, f["\(name).train.new.\(bname)"])
                    #expect(se < 1e-4, "\(name) \(bname): \(se)")
                    worstStat = max(worstStat, se)
                }
                logParity("\(name).train.running_stats", worstStat)
            }
        }
    }
}
