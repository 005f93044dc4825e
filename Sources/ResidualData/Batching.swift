import Dispatch
import Synchronization
import ResidualAutodiff

/// How pixels are normalised before they reach the network.
public enum Normalization: String, Sendable, Codable, CaseIterable {
    /// He et al. 4.2 (after Krizhevsky et al.): subtract the training set's mean image, pixel by
    /// pixel, then divide by one standard deviation per channel (of the mean-subtracted pixels).
    ///
    /// The division is not in the paper; it only rescales the input, which the batch norm after the
    /// first convolution undoes, but it keeps the first layer's gradients at the scale He
    /// initialisation assumes. With the mean image subtracted, the zero padding of the random crop
    /// is "an average pixel" at every position, and for Fashion-MNIST, whose borders are black in
    /// every image, the 28x28 -> 32x32 border and the crop padding both equal the real background:
    /// no artificial frame.
    case perPixelMean = "pixel"
    /// Per-channel mean and standard deviation (torchvision's `Normalize`); padding is then the
    /// channel mean, which on Fashion-MNIST's black background shows as a grey frame.
    case perChannel = "channel"
}

/// Normalisation and the paper's augmentation (He et al. 4.2): images scaled to [0, 1] and
/// normalised (see ``Normalization``), centred on a `size` x `size` canvas (28x28 Fashion-MNIST
/// becomes 32x32; the 2-pixel border gets the background value 0 before normalisation, like any
/// padded image), and, when augmenting, padded by `cropPadding` zeros (after normalisation, as in
/// the paper) on each side with a random `size` x `size` crop and a random horizontal flip.
public struct Preprocessing: Sendable, Codable, Equatable {
    public var normalization: Normalization
    /// Per channel (`C` values) or per pixel (`C * H * W` values, at the source resolution), in
    /// units of the [0, 1] pixel range.
    public var mean: [Float]
    /// Per channel.
    public var standardDeviation: [Float]
    public var size: Int
    public var cropPadding: Int
    public var flip: Bool

    public init(normalization: Normalization = .perChannel, mean: [Float], standardDeviation: [Float], size: Int,
                cropPadding: Int = 4, flip: Bool = true) {
        self.normalization = normalization
        self.mean = mean; self.standardDeviation = standardDeviation; self.size = size
        self.cropPadding = cropPadding; self.flip = flip
    }

    /// Statistics of `dataset` (normally the training set), output size `max(32, H, W)`.
    public init(fitting dataset: Dataset, normalization: Normalization = .perPixelMean, size: Int? = nil,
                cropPadding: Int = 4, flip: Bool = true) {
        let (c, plane, n) = (dataset.channels, dataset.height * dataset.width, max(dataset.count, 1))
        // Sums in integers (exact and order-independent), means and variances in Double.
        var pixelSum = [Int](repeating: 0, count: c * plane)
        var channelSquares = [Int](repeating: 0, count: c)
        dataset.images.withUnsafeBufferPointer { p in
            for i in 0..<dataset.count {
                for k in 0..<c {
                    let base = (i * c + k) * plane
                    var s2 = 0
                    for j in 0..<plane {
                        let v = Int(p[base + j])
                        pixelSum[k * plane + j] += v
                        s2 += v * v
                    }
                    channelSquares[k] += s2
                }
            }
        }
        let scale = 1.0 / 255
        var mean: [Float] = [], std: [Float] = []
        for k in 0..<c {
            let sums = pixelSum[(k * plane)..<((k + 1) * plane)]
            let channelMean = Double(sums.reduce(0, +)) / Double(n * plane)
            let meanSquare = Double(channelSquares[k]) / Double(n * plane)
            var variance = meanSquare - channelMean * channelMean
            if normalization == .perPixelMean {
                // E[(x - mu_j)^2] = E[x^2] - mean over j of mu_j^2.
                let mu2 = sums.reduce(0.0) { let m = Double($1) / Double(n); return $0 + m * m } / Double(plane)
                variance = meanSquare - mu2
                mean += sums.map { Float(Double($0) / Double(n) * scale) }
            } else {
                mean.append(Float(channelMean * scale))
            }
            std.append(Float(max(variance, 1e-6).squareRoot() * scale))
        }
        self.init(normalization: normalization, mean: mean, standardDeviation: std,
                  size: size ?? max(32, dataset.height, dataset.width), cropPadding: cropPadding, flip: flip)
    }

    /// Checks that these statistics fit `dataset`'s images and are sane, for statistics read from
    /// a file (a checkpoint's metadata is as untrusted as any other input).
    public func check(for dataset: Dataset, file: String = "<preprocessing>") throws(DataError) {
        let perPixel = normalization == .perPixelMean
        let expected = dataset.channels * (perPixel ? dataset.height * dataset.width : 1)
        guard mean.count == expected, standardDeviation.count == dataset.channels else {
            throw DataError(.badDimensions, file: file, "normalisation statistics for \(mean.count) mean and "
                            + "\(standardDeviation.count) deviation values do not fit \(dataset.channels)x\(dataset.height)x"
                            + "\(dataset.width) images (\(perPixel ? "per-pixel" : "per-channel"))")
        }
        guard mean.allSatisfy(\.isFinite), standardDeviation.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw DataError(.corrupt, file: file, "normalisation statistics are not finite, or a deviation is not positive")
        }
        guard size >= max(dataset.height, dataset.width), size <= 4096, (0...size).contains(cropPadding) else {
            throw DataError(.badDimensions, file: file, "canvas \(size), crop padding \(cropPadding) do not fit "
                            + "\(dataset.height)x\(dataset.width) images")
        }
    }

    /// Writes image `index` of `dataset` into `out` (`C x size x size`). `shift` is the crop offset
    /// in `-cropPadding...cropPadding` per axis (0, 0 = centred, no augmentation).
    func write(_ dataset: Dataset, _ index: Int, shiftY: Int, shiftX: Int, flip: Bool, into out: UnsafeMutablePointer<Float>) {
        let (h, w, s) = (dataset.height, dataset.width, size)
        let top = (s - h) / 2, left = (s - w) / 2
        let perPixel = normalization == .perPixelMean
        precondition(mean.count == dataset.channels * (perPixel ? h * w : 1) && standardDeviation.count == dataset.channels,
                     "Preprocessing: statistics for \(mean.count) values do not fit \(dataset.channels)x\(h)x\(w) images")
        dataset.images.withUnsafeBufferPointer { p in
            mean.withUnsafeBufferPointer { mu in
                for c in 0..<dataset.channels {
                    let src = p.baseAddress! + (index * dataset.channels + c) * h * w
                    let dst = out + c * s * s
                    let scale = 1 / (255 * standardDeviation[c]), inverse = 1 / standardDeviation[c]
                    let mc = perPixel ? mu.baseAddress! + c * h * w : mu.baseAddress! + c
                    let stride = perPixel ? 1 : 0
                    for y in 0..<s {
                        let sy = y + shiftY        // row on the padded canvas
                        let iy = sy - top          // row in the source image
                        for x in 0..<s {
                            let sx = (flip ? s - 1 - x : x) + shiftX
                            let ix = sx - left
                            let v: Float
                            if sy < 0 || sy >= s || sx < 0 || sx >= s {
                                v = 0                                      // crop padding: zero after normalisation
                            } else if iy < 0 || iy >= h || ix < 0 || ix >= w {
                                v = -(perPixel ? 0 : mc[0]) * inverse      // canvas border: a black pixel
                            } else {
                                v = Float(src[iy * w + ix]) * scale - mc[(iy * w + ix) * stride] * inverse
                            }
                            dst[y * s + x] = v
                        }
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
    /// How many batches are prepared ahead of the one being consumed.
    public let prefetch: Int
    private let waited = Atomic<UInt64>(0)

    public init(_ dataset: Dataset, batchSize: Int, shuffle: Bool, augment: Bool, preprocessing: Preprocessing,
                seed: UInt64 = 0, dropLast: Bool = false, prefetch: Int = 2) {
        precondition(batchSize > 0, "BatchLoader: batch size must be positive")
        precondition(prefetch > 0, "BatchLoader: prefetch must be positive")
        self.dataset = dataset; self.batchSize = batchSize; self.shuffle = shuffle; self.augment = augment
        self.preprocessing = preprocessing; self.seed = seed; self.dropLast = dropLast; self.prefetch = prefetch
    }

    /// Total time, in seconds, that consumers of ``batches(epoch:startingAt:)`` spent blocked
    /// waiting for a batch that was not ready yet. Near zero means compute never waited for data.
    public var dataWaitSeconds: Double { Double(waited.load(ordering: .relaxed)) * 1e-9 }

    func addWait(_ nanoseconds: UInt64) { waited.add(nanoseconds, ordering: .relaxed) }

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

/// An epoch's batches, each built on a background queue `loader.prefetch` steps ahead of use.
public struct PrefetchingBatches: Sequence, IteratorProtocol {
    let loader: BatchLoader
    let epoch: Int
    let order: [Int]
    var scheduled: Int                 // next batch index to hand to the background queue
    var pending: [PendingBatch] = []   // in order; pending[0] is the next batch returned

    init(loader: BatchLoader, epoch: Int, start: Int) {
        self.loader = loader; self.epoch = epoch; order = loader.order(epoch: epoch); scheduled = Swift.max(start, 0)
        fill()
    }

    private mutating func fill() {
        while pending.count < loader.prefetch && scheduled < loader.batchesPerEpoch {
            pending.append(PendingBatch(loader, epoch, scheduled, order))
            scheduled += 1
        }
    }

    public mutating func next() -> Batch? {
        guard !pending.isEmpty else { return nil }
        let p = pending.removeFirst()
        let t0 = DispatchTime.now().uptimeNanoseconds
        let batch = p.wait()
        loader.addWait(DispatchTime.now().uptimeNanoseconds - t0)
        fill()
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
