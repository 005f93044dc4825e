import Testing
import Foundation

/// `resnet zoo` as a user runs it: the JSON records of issue 5 ("name", "params", "macs", "input"),
/// the names in order, and `--shortcut`/`--v1.5` reaching the listing. The figures themselves are
/// computed by `Zoo.listing` and checked in full by ZooTests; this checks the command's wiring.
@Suite struct ZooCLITests {
    struct Record: Decodable, Equatable {
        let name: String, params: Int, macs: Int, input: [Int]
    }

    func listing(_ options: [String]) throws -> [String: Record] {
        let run = try resnet(["zoo", "--json"] + options)
        #expect(run.status == 0, "\(run.stderr)")
        let records = try JSONDecoder().decode([Record].self, from: Data(run.lastLine.utf8))
        let depths = ["18", "34", "50", "101", "152"], cifar = ["20", "32", "44", "56", "110", "1202"]
        #expect(records.map(\.name) == depths.map { "plain" + $0 } + depths.map { "resnet" + $0 }
                + cifar.map { "plain" + $0 } + cifar.map { "resnet" + $0 })
        return Dictionary(uniqueKeysWithValues: records.map { ($0.name, $0) })
    }

    @Test func defaultListing() throws {
        let r = try listing([])
        #expect(r["resnet18"] == Record(name: "resnet18", params: 11_515_688, macs: 1_794_805_760, input: [3, 224, 224]))
        #expect(r["resnet50"] == Record(name: "resnet50", params: 25_557_032, macs: 3_857_973_248, input: [3, 224, 224]))
        #expect(r["resnet152"]?.params == 60_192_808 && r["resnet152"]?.macs == 11_282_415_616)
        #expect(r["resnet1202"] == Record(name: "resnet1202", params: 19_421_274, macs: r["plain1202"]!.macs, input: [3, 32, 32]))
        #expect(r["resnet20"]?.params == 269_722 && r["plain20"]?.params == 269_722)
    }

    @Test func optionsChangeTheListing() throws {
        let r = try listing(["--shortcut", "B", "--v1.5"])
        // Option B everywhere: torchvision's counts; the plain nets have no shortcut to change.
        #expect(r["resnet18"]?.params == 11_689_512 && r["resnet34"]?.params == 21_797_672)
        #expect(r["plain18"]?.params == 11_515_688)
        #expect(r["resnet20"]?.params == 272_474)
        // v1.5: stride on the 3x3 of the bottleneck (torchvision's 4.09, 7.80, 11.51 G).
        let v15: [Int] = ["resnet50", "resnet101", "resnet152"].map { r[$0]?.macs ?? 0 }
        #expect(v15 == [4_089_184_256, 7_801_405_440, 11_513_626_624])
        let c = try listing(["--shortcut", "C"])
        #expect(c["resnet18"]?.params == 12_043_816 && c["resnet20"]?.params == 283_962)
    }

    /// `zoo --step` runs one forward+backward step and reports peak memory (issue 5's ResNet-1202
    /// figure is measured this way; a small net here keeps the suite fast).
    @Test func stepReportsPeakMemory() throws {
        let run = try resnet(["zoo", "--step", "resnet20", "--batch", "2"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("59 of 59 parameters got gradients"), "\(run.stdout)")
        #expect(run.stdout.contains("peak resident memory:"), "\(run.stdout)")
        let bad = try resnet(["zoo", "--step", "resnet21"])
        #expect(bad.status != 0 && bad.stderr.contains("unknown model 'resnet21'"), "\(bad.stderr)")
    }
}
