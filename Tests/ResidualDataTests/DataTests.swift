import Testing
import Foundation
import ResidualData

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
func fixture(_ name: String) -> [UInt8] { [UInt8](try! Data(contentsOf: fixtures.appendingPathComponent(name))) }

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

@Suite struct GzipTests {
    @Test(arguments: ["gzip-level0.gz", "gzip-level9.gz", "gzip-two-members.gz", "gzip-header-fields.gz"])
    func decodesEveryVariant(_ name: String) throws {
        #expect(try gunzip(fixture(name), file: name) == fixture("payload.bin"))
    }

    @Test func crc32KnownValues() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([]) == 0)
        #expect(CRC32.checksum(fixture("payload.bin")) == 4_276_859_450)
    }

    @Test func truncatedAnywhereThrows() {
        let good = fixture("gzip-level9.gz")
        for cut in [0, 1, 5, 10, 12, 40, good.count / 2, good.count - 9, good.count - 4, good.count - 1] {
            #expect(throws: DataError.self, "cut at \(cut)") { try gunzip(Array(good[0..<cut]), file: "cut") }
        }
        expectDataError(.truncated) { _ = try gunzip(Array(good[0..<(good.count - 4)]), file: "t") }
    }

    @Test func damagedBytesThrow() {
        let good = fixture("gzip-level9.gz")
        var magic = good; magic[0] = 0x1E
        let e = expectDataError(.badMagic) { _ = try gunzip(magic, file: "bad.gz") }
        #expect(e?.description.contains("bad.gz") == true && e?.description.contains("1e 8b") == true)
        var crc = good; crc[crc.count - 8] ^= 0xFF
        expectDataError(.badChecksum) { _ = try gunzip(crc, file: "crc.gz") }
        var size = good; size[size.count - 1] ^= 0x01
        expectDataError(.corrupt) { _ = try gunzip(size, file: "size.gz") }
        var method = good; method[2] = 7
        expectDataError(.unsupported) { _ = try gunzip(method, file: "m.gz") }
        var header = fixture("gzip-header-fields.gz"); header[14] ^= 0x40   // inside FEXTRA, covered by FHCRC
        expectDataError(.badChecksum) { _ = try gunzip(header, file: "h.gz") }
        // Every single-byte corruption of the compressed stream is caught (by the decoder or the CRC).
        for i in stride(from: 10, to: good.count - 8, by: 7) {
            var bad = good; bad[i] ^= 0x55
            #expect(throws: DataError.self, "flip at \(i)") { try gunzip(bad, file: "flip") }
        }
    }

    @Test func realFileInflatesWithMatchingCRC() throws {
        let data = try Dataset.fashionMNIST(train: false)
        #expect(data.count == 10_000 && data.height == 28 && data.width == 28 && data.channels == 1)
        #expect(Array(data.labels.prefix(10)) == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
    }
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
    }

    @Test func tarDamaged() throws {
        let tar = try gunzip(fixture("tarball/cifar-10-binary.tar.gz"))
        #expect(try readTar(tar).map(\.name) == ["cifar-10-batches-bin/batches.meta.txt", "cifar-10-batches-bin/test_batch.bin"])
        var bad = tar; bad[10] ^= 0x20
        expectDataError(.badChecksum) { _ = try readTar(bad, file: "bad.tar") }
        expectDataError(.truncated) { _ = try readTar(Array(tar.prefix(700)), file: "short.tar") }
        expectDataError(.truncated) { _ = try readTar(Array(tar.prefix(300)), file: "short.tar") }
    }
}

@Suite struct BatchingTests {
    static let data: Dataset = try! Dataset.fashionMNIST(train: false).prefix(1000)

    @Test func normalisationAndPadding() {
        let prep = Preprocessing(fitting: Self.data)
        #expect(prep.size == 32)
        let loader = BatchLoader(Self.data, batchSize: 1000, shuffle: false, augment: false, preprocessing: prep)
        let b = loader.batch(epoch: 0, index: 0, order: loader.order(epoch: 0))
        #expect(b.images.shape == [1000, 1, 32, 32])
        // The 28x28 image sits in the middle; the 2-pixel border is zero; the inside is normalised.
        let s = b.images.scalars
        #expect(s[0] == 0 && s[31] == 0 && s[2 * 32 + 1] == 0)
        var sum = 0.0, sq = 0.0
        for i in 0..<1000 { for y in 2..<30 { for x in 2..<30 { let v = Double(s[i * 1024 + y * 32 + x]); sum += v; sq += v * v } } }
        let n = 1000.0 * 784
        #expect(abs(sum / n) < 1e-3 && abs(sq / n - 1) < 1e-3, "normalised mean \(sum / n), variance \(sq / n)")
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
        let prep = Preprocessing(mean: [0], standardDeviation: [1], size: 32, cropPadding: 4, flip: true)
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
