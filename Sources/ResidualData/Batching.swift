import Dispatch
import ResidualAutodiff

/// Per-channel normalisation and the paper's augmentation (He et al. 4.2): images scaled to [0, 1],
/// normalised with the training set's per-channel mean and standard deviation, zero-padded to
/// `size` (28x28 Fashion-MNIST becomes 32x32), and, when augmenting, padded by `cropPadding` more
/// pixels on each side with a random `size`x`size` crop and a random horizontal flip.
public struct Preprocessing: Sendable, Codable, Equatable {
    public var mean: [Float]
    public var standardDeviation: [Float]
    public var size: Int
    public var cropPadding: Int
    public var flip: Bool

    public init(mean: [Float], standardDeviation: [Float], size: Int, cropPadding: Int = 4, flip: Bool = true) {
        self.mean = mean; self.standardDeviation = standardDeviation; self.size = size
        self.cropPadding = cropPadding; self.flip = flip
    }

    /// Statistics of `dataset` (normally the training set), output size `max(32, H)`.
    public init(fitting dataset: Dataset, size: Int? = nil, cropPadding: Int = 4, flip: Bool = true) {
        var sum = [Double](repeating: 0, count: dataset.channels), sq = sum
        let plane = dataset.height * dataset.width
        dataset.images.withUnsafeBufferPointer { p in
            for i in 0..<dataset.count {
                for c in 0..<dataset.channels {
                    let base = (i * dataset.channels + c) * plane
                    var s = 0, s2 = 0
                    for j in 0..<plane { let v = Int(p[base + j]); s += v; s2 += v * v }
                    sum[c] += Double(s); sq[c] += Double(s2)
                }
            }
        }
        let n = Double(dataset.count * plane) * 255
        mean = sum.map { Float($0 / n) }
        standardDeviation = zip(sum, sq).map { s, s2 in
            let m = s / n, v = s2 / (n * 255) - m * m
            return Float(max(v, 1e-12).squareRoot())
        }
        self.size = size ?? max(32, dataset.height)
        self.cropPadding = cropPadding
        self.flip = flip
    }

    /// Writes image `index` of `dataset` into `out` (`C x size x size`). `shift` is the crop offset
    /// in `-cropPadding...cropPadding` per axis (0, 0 = centred, no augmentation).
    func write(_ dataset: Dataset, _ index: Int, shiftY: Int, shiftX: Int, flip: Bool, into out: UnsafeMutablePointer<Float>) {
        let (h, w, s) = (dataset.height, dataset.width, size)
        let top = (s - h) / 2, left = (s - w) / 2
        dataset.images.withUnsafeBufferPointer { p in
            for c in 0..<dataset.channels {
                let src = p.baseAddress! + (index * dataset.channels + c) * h * w
                let dst = out + c * s * s
                let scale = 1 / (255 * standardDeviation[c]), bias = -mean[c] / standardDeviation[c]
                for y in 0..<s {
                    let sy = y + shiftY - top
                    for x in 0..<s {
                        let xx = flip ? s - 1 - x : x
                        let sx = xx + shiftX - left
                        dst[y * s + x] = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? Float(src[sy * w + sx]) * scale + bias : 0
                    }
                }
            }
        }
    }
}

/// One mini-batch: images `[B, C, S, S]` and their labels.
public struct Batch: Sendable {
    public let images: Tensor
    public let labels: [Int]
    /// Position of this batch in its epoch.
    public let index: Int
}

/// Yields an epoch's batches in a seeded order, optionally augmented, preparing the next batch on a
/// background queue while the caller computes on the current one.
///
/// Everything random is a pure function of `(seed, epoch, position)`: the shuffle of epoch `e` and
/// each image's crop and flip. So a run resumed at (epoch, batch) sees exactly the batches an
/// uninterrupted run would, whatever the thread count.
public final class BatchLoader: Sendable {
    public let dataset: Dataset
    public let batchSize: Int
    public let shuffle: Bool
    public let augment: Bool
    public let preprocessing: Preprocessing
    public let seed: UInt64
    public let dropLast: Bool

    public init(_ dataset: Dataset, batchSize: Int, shuffle: Bool, augment: Bool, preprocessing: Preprocessing,
                seed: UInt64 = 0, dropLast: Bool = false) {
        precondition(batchSize > 0, "BatchLoader: batch size must be positive")
        self.dataset = dataset; self.batchSize = batchSize; self.shuffle = shuffle; self.augment = augment
        self.preprocessing = preprocessing; self.seed = seed; self.dropLast = dropLast
    }

    public var batchesPerEpoch: Int {
        dropLast ? dataset.count / batchSize : (dataset.count + batchSize - 1) / batchSize
    }

    static func mix(_ a: UInt64, _ b: UInt64, _ c: UInt64) -> UInt64 {
        var g = SeededGenerator(seed: a ^ (b &* 0x9E37_79B9_7F4A_7C15) ^ (c &* 0xC2B2_AE3D_27D4_EB4F))
        return g.next()
    }

    /// The order of the dataset's images in `epoch`.
    public func order(epoch: Int) -> [Int] {
        var idx = Array(0..<dataset.count)
        if shuffle {
            var g = SeededGenerator(seed: Self.mix(seed, UInt64(epoch), 0x5EED))
            idx.shuffle(using: &g)
        }
        return idx
    }

    /// Builds batch `b` of `epoch` (used directly, or by the prefetching iterator).
    public func batch(epoch: Int, index b: Int, order: [Int]) -> Batch {
        let lo = b * batchSize, hi = min(lo + batchSize, dataset.count)
        let s = preprocessing.size, c = dataset.channels, pad = preprocessing.cropPadding
        let images = Tensor(shape: [hi - lo, c, s, s]) { buf in
            for (k, i) in order[lo..<hi].enumerated() {
                var sy = 0, sx = 0, flip = false
                if augment {
                    var g = SeededGenerator(seed: Self.mix(seed, UInt64(epoch), UInt64(lo + k) + 1))
                    sy = Int(g.next() % UInt64(2 * pad + 1)) - pad
                    sx = Int(g.next() % UInt64(2 * pad + 1)) - pad
                    flip = preprocessing.flip && g.next() & 1 == 1
                }
                preprocessing.write(dataset, i, shiftY: sy, shiftX: sx, flip: flip, into: buf.baseAddress! + k * c * s * s)
            }
        }
        return Batch(images: images, labels: order[lo..<hi].map { dataset.labels[$0] }, index: b)
    }

    /// The batches of `epoch` from `start` on, each prepared one step ahead on a background queue.
    public func batches(epoch: Int, startingAt start: Int = 0) -> PrefetchingBatches {
        PrefetchingBatches(loader: self, epoch: epoch, start: start)
    }
}

public struct PrefetchingBatches: Sequence, IteratorProtocol {
    let loader: BatchLoader
    let epoch: Int
    let order: [Int]
    var position: Int
    var pending: PendingBatch?

    init(loader: BatchLoader, epoch: Int, start: Int) {
        self.loader = loader; self.epoch = epoch; order = loader.order(epoch: epoch); position = start
        pending = start < loader.batchesPerEpoch ? PendingBatch(loader, epoch, start, order) : nil
    }

    public mutating func next() -> Batch? {
        guard let p = pending else { return nil }
        let batch = p.wait()
        position += 1
        pending = position < loader.batchesPerEpoch ? PendingBatch(loader, epoch, position, order) : nil
        return batch
    }
}

/// A batch being built on a background queue.
final class PendingBatch: @unchecked Sendable {
    private static let queue = DispatchQueue(label: "residual.data.prefetch", qos: .userInitiated)
    private let done = DispatchSemaphore(value: 0)
    private var result: Batch?

    init(_ loader: BatchLoader, _ epoch: Int, _ index: Int, _ order: [Int]) {
        PendingBatch.queue.async {
            self.result = loader.batch(epoch: epoch, index: index, order: order)
            self.done.signal()
        }
    }

    func wait() -> Batch {
        done.wait()
        return result!
    }
}
