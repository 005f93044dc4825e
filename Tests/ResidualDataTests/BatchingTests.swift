import Testing
import Foundation
import ResidualData

@Suite struct BatchingTests {
    static let data: Dataset = try! Dataset.fashionMNIST(train: false).prefix(1000)

    /// Per-pixel mean subtraction (the paper's, the default): every pixel position has mean 0 over
    /// the set, the whole has variance 1, and the 28x28 -> 32x32 border is 0 (Fashion-MNIST's black
    /// background minus its mean, which is 0 there).
    @Test func perPixelNormalisation() {
        let prep = Preprocessing(fitting: Self.data)
        #expect(prep.normalization == .perPixelMean && prep.size == 32 && prep.mean.count == 784)
        let loader = BatchLoader(Self.data, batchSize: 1000, shuffle: false, augment: false, preprocessing: prep)
        let b = loader.batch(epoch: 0, index: 0, order: loader.order(epoch: 0))
        #expect(b.images.shape == [1000, 1, 32, 32])
        let s = b.images.scalars
        var pixelMean = [Double](repeating: 0, count: 1024), sq = 0.0
        for i in 0..<1000 { for j in 0..<1024 { let v = Double(s[i * 1024 + j]); pixelMean[j] += v / 1000; sq += v * v } }
        #expect(pixelMean.allSatisfy { abs($0) < 1e-4 }, "largest per-pixel mean \(pixelMean.map(abs).max()!)")
        #expect(abs(sq / (1000 * 784) - 1) < 1e-3, "variance \(sq / (1000 * 784))")
        for i in 0..<1000 { for j in 0..<32 { #expect(s[i * 1024 + j] == 0 && s[i * 1024 + 31 * 32 + j] == 0) } }
    }

    /// Per-channel normalisation: mean 0 and variance 1 inside the image; the border is a black
    /// pixel (-mean / std), not 0.
    @Test func perChannelNormalisation() {
        let prep = Preprocessing(fitting: Self.data, normalization: .perChannel)
        #expect(prep.mean.count == 1 && prep.standardDeviation.count == 1)
        let loader = BatchLoader(Self.data, batchSize: 1000, shuffle: false, augment: false, preprocessing: prep)
        let s = loader.batch(epoch: 0, index: 0, order: loader.order(epoch: 0)).images.scalars
        let black = -prep.mean[0] / prep.standardDeviation[0]
        #expect(black < -0.5 && s[0] == black && s[31] == black && s[2 * 32 + 1] == black)
        var sum = 0.0, sq = 0.0
        for i in 0..<1000 { for y in 2..<30 { for x in 2..<30 { let v = Double(s[i * 1024 + y * 32 + x]); sum += v; sq += v * v } } }
        let n = 1000.0 * 784
        #expect(abs(sum / n) < 1e-3 && abs(sq / n - 1) < 1e-3, "normalised mean \(sum / n), variance \(sq / n)")
    }

    /// Statistics read back from a file are checked against the data before use.
    @Test func checkedAgainstTheData() throws {
        let prep = Preprocessing(fitting: Self.data)
        try prep.check(for: Self.data)
        let cifar = try Dataset.load(directory: fixtures, train: false)
        expectDataError(.badDimensions) { try prep.check(for: cifar, file: "ckpt") }
        var bad = prep; bad.standardDeviation = [0]
        expectDataError(.corrupt) { try bad.check(for: Self.data) }
        bad = prep; bad.mean[3] = .nan
        expectDataError(.corrupt) { try bad.check(for: Self.data) }
        bad = prep; bad.size = 1 << 20
        expectDataError(.badDimensions) { try bad.check(for: Self.data) }
        bad = prep; bad.size = 16
        expectDataError(.badDimensions) { try bad.check(for: Self.data) }
    }

    /// The statistics are stored in checkpoints as JSON: they must survive the round trip exactly.
    @Test func codable() throws {
        let prep = Preprocessing(fitting: Self.data)
        let back = try JSONDecoder().decode(Preprocessing.self, from: JSONEncoder().encode(prep))
        #expect(back == prep)
    }

    /// The loader accounts the time its consumer spent blocked on a batch (the CLI reports it per
    /// epoch; how small it is, is a measurement, not a unit test).
    @Test func waitIsAccounted() {
        let prep = Preprocessing(fitting: Self.data)
        let loader = BatchLoader(Self.data, batchSize: 100, shuffle: true, augment: true, preprocessing: prep, seed: 1, prefetch: 3)
        #expect(loader.dataWaitSeconds == 0)
        #expect(Array(loader.batches(epoch: 0)).map(\.index) == Array(0..<10))
        #expect(loader.dataWaitSeconds > 0)
    }

    @Test func seededAndResumable() {
        let prep = Preprocessing(fitting: Self.data)
        let a = BatchLoader(Self.data, batchSize: 64, shuffle: true, augment: true, preprocessing: prep, seed: 7)
        let b = BatchLoader(Self.data, batchSize: 64, shuffle: true, augment: true, preprocessing: prep, seed: 7)
        let c = BatchLoader(Self.data, batchSize: 64, shuffle: true, augment: true, preprocessing: prep, seed: 8)
        let full = Array(a.batches(epoch: 3))
        let resumed = Array(b.batches(epoch: 3, startingAt: 5))
        #expect(full.count == 16 && resumed.count == 11)
        #expect(full[5].images.scalars == resumed[0].images.scalars && full[5].labels == resumed[0].labels)
        #expect(full[0].labels != Array(c.batches(epoch: 3))[0].labels)
        #expect(full[0].labels != Array(a.batches(epoch: 4))[0].labels, "each epoch has its own order")
        // Every image appears once per epoch.
        #expect(full.flatMap(\.labels).count == 1000)
    }

    /// Augmentation is a crop of the zero-padded image and a horizontal flip: check both on a marker.
    @Test func cropAndFlip() {
        var pixels = [UInt8](repeating: 0, count: 32 * 32)
        pixels[5 * 32 + 7] = 255
        let d = Dataset(images: pixels, labels: [0], channels: 1, height: 32, width: 32, classNames: ["x"])
        let prep = Preprocessing(normalization: .perChannel, mean: [0], standardDeviation: [1], size: 32, cropPadding: 4, flip: true)
        var seen = Set<[Int]>()
        for seed in 0..<40 {
            let l = BatchLoader(d, batchSize: 1, shuffle: false, augment: true, preprocessing: prep, seed: UInt64(seed))
            let img = l.batch(epoch: 0, index: 0, order: [0]).images.scalars
            let hits = img.indices.filter { img[$0] == 1 }
            #expect(hits.count <= 1)
            if let h = hits.first {
                let (y, x) = (h / 32, h % 32)
                // Either unflipped (x = 7 - dx) or flipped (x = 31 - (7 + dx)), |dy|, |dx| <= 4.
                #expect(abs(y - 5) <= 4)
                #expect(abs(x - 7) <= 4 || abs((31 - x) - 7) <= 4)
                seen.insert([y, x])
            }
        }
        #expect(seen.count > 10, "crops and flips vary with the seed")
    }
}
