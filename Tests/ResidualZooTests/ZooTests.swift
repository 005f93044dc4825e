import Testing
import Residual

/// The zoo against the paper's and torchvision's figures, computed from the built modules.
@Suite struct ZooTests {
    @Test(arguments: [
        ("resnet18", ShortcutOption.b, 11_689_512), ("resnet34", .b, 21_797_672), ("resnet50", .b, 25_557_032),
        ("resnet101", .b, 44_549_160), ("resnet152", .b, 60_192_808),
        ("plain18", .none, 11_515_688), ("resnet18", .a, 11_515_688),
        ("plain34", .none, 21_623_848), ("resnet34", .a, 21_623_848),
    ])
    func imagenetParameterCounts(_ c: (String, ShortcutOption, Int)) {
        let model = Zoo.make(c.0, options: .init(shortcut: c.1))!
        #expect(model.parameterCount == c.2, "\(c.0) option \(c.1)")
    }

    @Test(arguments: [(20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018), (110, 1_727_962), (1202, 19_421_274)])
    func cifarParameterCounts(_ c: (Int, Int)) {
        #expect(Zoo.make("resnet\(c.0)")!.parameterCount == c.1)
        #expect(Zoo.make("plain\(c.0)")!.parameterCount == c.1, "option A adds no parameters")
    }

    /// Multiply-adds at 224x224 (Table 1: 1.8, 3.6, 3.8, 7.6, 11.3 x 10^9), from the summary's forward
    /// pass over the built module (convolutions and the FC layer, the paper's convention). The paper
    /// prints one decimal (ResNet-50's 3.858 appears as 3.8), so the comparison allows 0.06 G; the
    /// exact counts are pinned as well.
    @Test(arguments: [("resnet18", 1.8, 1_794_805_760), ("resnet34", 3.6, 3_644_493_824), ("resnet50", 3.8, 3_857_973_248),
                      ("resnet101", 7.6, 7_570_194_432), ("resnet152", 11.3, 11_282_415_616)])
    func tableOneMultiplyAdds(_ c: (String, Double, Int)) {
        let model = Zoo.make(c.0)!
        let total = ModelSummary(model, inputShape: [3, 224, 224]).totalMACs
        #expect(abs(Double(total) / 1e9 - c.1) < 0.06, "\(c.0): \(total) MACs")
        #expect(total == c.2)
    }

    @Test(arguments: [("resnet50", 4.09), ("resnet101", 7.80), ("resnet152", 11.51)])
    func torchvisionStridePlacementMultiplyAdds(_ c: (String, Double)) {
        let model = Zoo.make(c.0, options: .init(stridePlacement: .middleConvolution))!
        let macs = Double(ModelSummary(model, inputShape: [3, 224, 224]).totalMACs) / 1e9
        #expect(abs(macs - c.1) < 0.005, "\(c.0) v1.5: \(macs) GMACs")
    }

    @Test func torchvisionNames() {
        let names = Set(Zoo.make("resnet50", options: .init(shortcut: .b))!.namedParameters().map(\.0))
        for n in ["conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight", "layer1.0.downsample.0.weight",
                  "layer1.0.downsample.1.bias", "layer4.2.bn3.weight", "fc.weight", "fc.bias"] {
            #expect(names.contains(n), "missing \(n)")
        }
        let buffers = Set(Zoo.make("resnet20")!.namedBuffers().map(\.0))
        #expect(buffers.contains("bn1.running_mean") && buffers.contains("layer3.2.bn2.running_var"))
        #expect(Zoo.make("resnet20")!.namedParameters().map(\.0).last == "fc.bias")
    }
}
