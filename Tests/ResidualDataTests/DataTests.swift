import Testing
import Foundation
import ResidualData

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
func fixture(_ name: String) -> [UInt8] { [UInt8](try! Data(contentsOf: fixtures.appendingPathComponent(name))) }
/// A file of the bundled Fashion-MNIST, as distributed (gzip-compressed IDX).
func bundled(_ name: String) -> [UInt8] {
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources/ResidualData/Resources/fashion-mnist")
    return [UInt8](try! Data(contentsOf: dir.appendingPathComponent(name)))
}

/// Expects `body` to throw a DataError of `kind`; returns it for further checks.
@discardableResult
func expectDataError(_ kind: DataError.Kind, sourceLocation: SourceLocation = #_sourceLocation,
                     _ body: () throws -> Void) -> DataError? {
    do {
        try body()
        Issue.record("expected a \(kind) error, nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as DataError {
        #expect(e.kind == kind, "\(e)", sourceLocation: sourceLocation)
        return e
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

@Suite struct ReaderTests {
    @Test func bundledFashionMNIST() throws {
        let train = try Dataset.fashionMNIST(train: true)
        #expect(train.count == 60_000)
        #expect(Array(train.labels.prefix(10)) == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
        var perClass = [Int](repeating: 0, count: 10)
        for l in train.labels { perClass[l] += 1 }
        #expect(perClass == [Int](repeating: 6000, count: 10))
        #expect(train.images[0..<784].reduce(0) { $0 + Int($1) } == 76_247)
        #expect(train.classNames[9] == "Ankle boot")
    }

    @Test func cifarDirectoryAndTarball() throws {
        for dir in [fixtures, fixtures.appendingPathComponent("tarball")] {
            let d = try Dataset.load(directory: dir, train: false)
            #expect(d.count == 20 && d.channels == 3 && d.height == 32)
            #expect(d.labels == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6])
            #expect(Array(d.images.prefix(6)) == [158, 159, 165, 166, 160, 156])
            #expect(d.classNames == Dataset.cifar10Classes)
        }
    }

    @Test func cifarDamaged() {
        let good = fixture("cifar-10-batches-bin/test_batch.bin")
        expectDataError(.truncated) { _ = try Dataset.cifar10([("part.bin", Array(good.dropLast(100)))]) }
        var label = good; label[3073] = 10
        let e = expectDataError(.corrupt) { _ = try Dataset.cifar10([("label.bin", label)]) }
        #expect(e?.offset == 3073)
        expectDataError(.truncated) { _ = try Dataset.cifar10([("empty.bin", [])]) }
    }

    @Test func idxDamaged() throws {
        let header: [UInt8] = [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]
        let good = header + [UInt8](repeating: 7, count: 8)
        #expect(try IDXArray(good).shape == [2, 2, 2])
        expectDataError(.badMagic) { _ = try IDXArray([1] + good.dropFirst()) }
        expectDataError(.truncated) { _ = try IDXArray(Array(good.dropLast())) }
        expectDataError(.truncated) { _ = try IDXArray(Array(good.prefix(9))) }
        expectDataError(.corrupt) { _ = try IDXArray(good + [0]) }
        expectDataError(.unsupported) { var b = good; b[2] = 0x0D; _ = try IDXArray(b) }
        // 2^31 images of 2^31 x 2^31 pixels in a 100-byte file: rejected, nothing allocated.
        let absurd: [UInt8] = [0, 0, 8, 3, 0x80, 0, 0, 0, 0x80, 0, 0, 0, 0x80, 0, 0, 0] + [UInt8](repeating: 0, count: 84)
        expectDataError(.badDimensions) { _ = try IDXArray(absurd, file: "absurd") }
        let labels: [UInt8] = [0, 0, 8, 1, 0, 0, 0, 2, 3, 12]
        let images = header + [UInt8](repeating: 0, count: 8)
        expectDataError(.corrupt) { _ = try Dataset.idx(images: images, labels: labels, classNames: Dataset.fashionMNISTClasses) }
        // No images at all: a valid IDX file, but not a dataset.
        let none: [UInt8] = [0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 28]
        expectDataError(.badDimensions) {
            _ = try Dataset.idx(images: none, labels: [0, 0, 8, 1, 0, 0, 0, 0], classNames: Dataset.fashionMNISTClasses)
        }
    }

    /// The real test files, decompressed, with damaged headers and wrong sizes.
    @Test func idxRealFilesDamaged() throws {
        let labels = try gunzip(bundled("t10k-labels-idx1-ubyte.gz"))
        let images = try gunzip(bundled("t10k-images-idx3-ubyte.gz"))
        #expect(try IDXArray(labels).shape == [10_000] && IDXArray(images).shape == [10_000, 28, 28])
        func with(_ b: [UInt8], _ at: Int, _ v: [UInt8]) -> [UInt8] { var b = b; b.replaceSubrange(at..<(at + v.count), with: v); return b }
        // Count one higher than the data: truncated, with the sizes in the message.
        let e = expectDataError(.truncated) { _ = try IDXArray(with(labels, 4, [0, 0, 0x27, 0x11]), file: "labels") }
        #expect(e?.description == "labels: IDX dimensions [10001] need 10001 data bytes, the file has 10000 (at byte 10008)")
        expectDataError(.corrupt) { _ = try IDXArray(with(labels, 4, [0, 0, 0x27, 0x0F])) }
        // 2^31 images claimed by the real header: rejected from the header alone.
        expectDataError(.truncated) { _ = try IDXArray(with(labels, 4, [0x80, 0, 0, 0])) }
        let absurd = expectDataError(.badDimensions) { _ = try IDXArray(with(images, 4, [0x80, 0, 0, 0]), file: "images") }
        #expect(absurd?.offset == 8)    // where the product of the dimensions passes 2^34
        expectDataError(.badDimensions) { _ = try IDXArray(with(images, 3, [0])) }     // rank 0
        expectDataError(.badDimensions) { _ = try IDXArray(with(images, 3, [9])) }     // rank 9
        expectDataError(.unsupported) { _ = try IDXArray(with(images, 2, [0x0B])) }   // int16 elements
        expectDataError(.badMagic) { _ = try IDXArray(with(images, 0, [0x1F, 0x8B])) } // still compressed
        // Images and labels that disagree; a label beyond the class list.
        expectDataError(.badDimensions) {
            _ = try Dataset.idx(images: images, labels: Array(with(labels, 4, [0, 0, 0x27, 0x0F]).dropLast()),
                                classNames: Dataset.fashionMNISTClasses)
        }
        expectDataError(.badDimensions) {
            _ = try Dataset.idx(images: labels, labels: labels, classNames: Dataset.fashionMNISTClasses)
        }
        let e2 = expectDataError(.corrupt) {
            _ = try Dataset.idx(images: images, labels: with(labels, 8 + 1234, [10]), labelsFile: "labels",
                                classNames: Dataset.fashionMNISTClasses)
        }
        #expect(e2?.offset == 8 + 1234)
    }

    /// A directory with no dataset, or one that does not exist: `notFound`, saying what was looked for.
    @Test func missingFiles() throws {
        let e = expectDataError(.notFound) { _ = try Dataset.load(directory: URL(fileURLWithPath: "/nonexistent/data"), train: true) }
        #expect(e?.description.contains("/nonexistent/data") == true)
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("residual-empty-\(getpid())")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        let e2 = expectDataError(.notFound) { _ = try Dataset.load(directory: empty, train: true) }
        #expect(e2?.message.contains("CIFAR-10") == true && e2?.message.contains("train-images-idx3-ubyte") == true)
        // CIFAR-10 directory with the test batch only: asking for training data names the missing file.
        let e3 = expectDataError(.notFound) { _ = try Dataset.load(directory: fixtures, train: true) }
        #expect(e3?.file.hasSuffix("data_batch_1.bin") == true)
    }
}

/// Random damage to every format, many times: each parse either succeeds or throws a `DataError`.
/// A crash or an out-of-bounds read traps and fails the whole test run. (Seeded: the same cases
/// every run. The reliability work adds coverage-guided fuzzing on top.)
@Suite struct MutationTests {
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func mutate(_ input: [UInt8], _ g: inout SplitMix) -> [UInt8] {
        var b = input
        for _ in 0..<Int.random(in: 1...3, using: &g) {
            guard !b.isEmpty else { break }
            let i = Int.random(in: 0..<b.count, using: &g)
            switch Int.random(in: 0..<6, using: &g) {
            case 0: b[i] ^= UInt8(1 << Int.random(in: 0..<8, using: &g))
            case 1: b[i] = UInt8.random(in: 0...255, using: &g)
            case 2: b[i] = [0, 0xFF, 0x7F, 0x80].randomElement(using: &g)!
            case 3: b.removeSubrange(i...)                                          // truncate
            case 4: b.insert(UInt8.random(in: 0...255, using: &g), at: i)
            default: b.removeSubrange(i..<min(b.count, i + Int.random(in: 1...64, using: &g)))
            }
        }
        return b
    }

    func run(_ input: [UInt8], count: Int, seed: UInt64, _ parse: ([UInt8]) throws(DataError) -> Void) -> [DataError.Kind: Int] {
        var g = SplitMix(state: seed)
        var outcomes: [DataError.Kind: Int] = [:]
        for _ in 0..<count {
            do { try parse(Self.mutate(input, &g)) } catch { outcomes[error.kind, default: 0] += 1 }
        }
        return outcomes
    }

    @Test(arguments: ["gzip-level0.gz", "gzip-level9.gz", "gzip-two-members.gz", "gzip-header-fields.gz"])
    func gzip(_ name: String) {
        let outcomes = run(fixture(name), count: 1500, seed: 1) { b throws(DataError) in _ = try gunzip(b, file: name) }
        #expect(outcomes.values.reduce(0, +) > 1000, "\(outcomes)")
    }

    @Test func realGzip() {
        let outcomes = run(bundled("t10k-labels-idx1-ubyte.gz"), count: 1000, seed: 2) { b throws(DataError) in _ = try gunzip(b) }
        #expect(outcomes.values.reduce(0, +) > 900, "\(outcomes)")
    }

    @Test(arguments: ["pax-long-name.tar", "gnu-long-name.tar"])
    func tar(_ name: String) {
        _ = run(fixture("tarball/" + name), count: 2000, seed: 3) { b throws(DataError) in _ = try readTar(b) }
    }

    @Test func cifarTar() throws {
        let tar = try gunzip(fixture("tarball/cifar-10-binary.tar.gz"))
        _ = run(Array(tar.prefix(4096)) + [UInt8](repeating: 0, count: 1024), count: 2000, seed: 4) { b throws(DataError) in
            _ = try readTar(b)
        }
    }

    @Test func idx() throws {
        let images = Array(try gunzip(bundled("t10k-images-idx3-ubyte.gz")).prefix(16 + 3 * 784))
        let labels = Array(try gunzip(bundled("t10k-labels-idx1-ubyte.gz")).prefix(8 + 3))
        var im = images; im[6] = 0; im[7] = 3
        var lb = labels; lb[6] = 0; lb[7] = 3
        #expect(try Dataset.idx(images: im, labels: lb, classNames: Dataset.fashionMNISTClasses).count == 3)
        _ = run(im, count: 2000, seed: 5) { b throws(DataError) in
            _ = try Dataset.idx(images: b, labels: lb, classNames: Dataset.fashionMNISTClasses)
        }
        _ = run(lb, count: 2000, seed: 6) { b throws(DataError) in
            _ = try Dataset.idx(images: im, labels: b, classNames: Dataset.fashionMNISTClasses)
        }
    }

    @Test func cifar() {
        let batch = Array(fixture("cifar-10-batches-bin/test_batch.bin").prefix(3 * 3073))
        _ = run(batch, count: 2000, seed: 7) { b throws(DataError) in _ = try Dataset.cifar10([("batch", b)]) }
    }
}

