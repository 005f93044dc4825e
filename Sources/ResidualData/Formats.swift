import Foundation

/// Reads a file whole; `.gz` files are decompressed.
func readFile(_ url: URL) throws(DataError) -> [UInt8] {
    let data: Data
    do { data = try Data(contentsOf: url) } catch {
        throw DataError(.notFound, file: url.path, "cannot read the file: \(error.localizedDescription)")
    }
    let bytes = [UInt8](data)
    return url.pathExtension == "gz" ? try gunzip(bytes, file: url.path) : bytes
}

/// An IDX array (MNIST's format): `00 00 <type> <rank>`, big-endian u32 dimensions, data.
public struct IDXArray: Sendable {
    public let shape: [Int]
    public let bytes: [UInt8]

    public init(_ data: [UInt8], file: String = "<memory>") throws(DataError) {
        guard data.count >= 4 else { throw DataError(.truncated, file: file, offset: 0, "IDX header needs 4 bytes, the file has \(data.count)") }
        guard data[0] == 0 && data[1] == 0 else {
            throw DataError(.badMagic, file: file, offset: 0, "expected the IDX magic 00 00, found \(hex(data[0])) \(hex(data[1]))")
        }
        guard data[2] == 0x08 else {
            throw DataError(.unsupported, file: file, offset: 2, "IDX element type \(hex(data[2])) is not unsigned byte (08)")
        }
        let rank = Int(data[3])
        guard rank >= 1 && rank <= 4 else { throw DataError(.badDimensions, file: file, offset: 3, "IDX rank \(rank) is not 1...4") }
        guard data.count >= 4 + 4 * rank else {
            throw DataError(.truncated, file: file, offset: data.count, "IDX header needs \(4 + 4 * rank) bytes")
        }
        var shape: [Int] = []
        var total = 1
        for d in 0..<rank {
            let o = 4 + 4 * d
            let n = Int(data[o]) << 24 | Int(data[o + 1]) << 16 | Int(data[o + 2]) << 8 | Int(data[o + 3])
            shape.append(n)
            let (product, overflow) = total.multipliedReportingOverflow(by: n)
            guard !overflow && product <= 1 << 34 else {
                throw DataError(.badDimensions, file: file, offset: o, "IDX dimensions \(shape) are absurd")
            }
            total = product
        }
        let body = 4 + 4 * rank
        guard data.count - body == total else {
            throw DataError(data.count - body < total ? .truncated : .corrupt, file: file, offset: data.count,
                            "IDX dimensions \(shape) need \(total) data bytes, the file has \(data.count - body)")
        }
        self.shape = shape
        bytes = Array(data[body...])
    }
}

/// A labelled image set: pixels as bytes `[N, C, H, W]`, labels in `0..<classNames.count`.
public struct Dataset: Sendable {
    public var images: [UInt8]
    public var labels: [Int]
    public var channels: Int, height: Int, width: Int
    public var classNames: [String]

    public var count: Int { labels.count }
    public var imageSize: Int { channels * height * width }

    public init(images: [UInt8], labels: [Int], channels: Int, height: Int, width: Int, classNames: [String]) {
        precondition(images.count == labels.count * channels * height * width, "Dataset: \(images.count) bytes for \(labels.count) images of \(channels)x\(height)x\(width)")
        self.images = images; self.labels = labels
        self.channels = channels; self.height = height; self.width = width; self.classNames = classNames
    }

    /// The first `n` images (or all).
    public func prefix(_ n: Int) -> Dataset {
        let k = Swift.max(0, min(n, count))
        return Dataset(images: Array(images[0..<(k * imageSize)]), labels: Array(labels[0..<k]), channels: channels,
                       height: height, width: width, classNames: classNames)
    }

    /// Images and labels from IDX files (MNIST / Fashion-MNIST).
    public static func idx(images: [UInt8], labels: [UInt8], imagesFile: String = "images", labelsFile: String = "labels",
                           classNames: [String]) throws(DataError) -> Dataset {
        let im = try IDXArray(images, file: imagesFile)
        let lb = try IDXArray(labels, file: labelsFile)
        guard im.shape.count == 3 else { throw DataError(.badDimensions, file: imagesFile, offset: 3, "images must be N x H x W, found \(im.shape)") }
        guard lb.shape.count == 1 else { throw DataError(.badDimensions, file: labelsFile, offset: 3, "labels must be a vector, found \(lb.shape)") }
        guard im.shape.allSatisfy({ $0 > 0 }) else {
            throw DataError(.badDimensions, file: imagesFile, offset: 4, "the IDX file holds no images (dimensions \(im.shape))")
        }
        guard im.shape[0] == lb.shape[0] else {
            throw DataError(.badDimensions, file: labelsFile, offset: 4, "\(lb.shape[0]) labels for \(im.shape[0]) images in \(imagesFile)")
        }
        for (i, l) in lb.bytes.enumerated() where Int(l) >= classNames.count {
            throw DataError(.corrupt, file: labelsFile, offset: 8 + i, "label \(l) is not below \(classNames.count)")
        }
        return Dataset(images: im.bytes, labels: lb.bytes.map(Int.init), channels: 1, height: im.shape[1],
                       width: im.shape[2], classNames: classNames)
    }

    /// Records of the CIFAR-10 binary layout: 1 label byte, then 3 x 32 x 32 pixel bytes (R, G, B planes).
    public static func cifar10(_ files: [(name: String, bytes: [UInt8])], classNames: [String] = Dataset.cifar10Classes) throws(DataError) -> Dataset {
        let record = 1 + 3 * 32 * 32
        var images: [UInt8] = [], labels: [Int] = []
        for f in files {
            guard f.bytes.count % record == 0 && !f.bytes.isEmpty else {
                throw DataError(.truncated, file: f.name, offset: f.bytes.count / record * record,
                                "\(f.bytes.count) bytes is not a whole number of \(record)-byte CIFAR-10 records")
            }
            images.reserveCapacity(images.count + f.bytes.count)
            for r in 0..<(f.bytes.count / record) {
                let l = Int(f.bytes[r * record])
                guard l < classNames.count else {
                    throw DataError(.corrupt, file: f.name, offset: r * record, "label \(l) is not below \(classNames.count)")
                }
                labels.append(l)
                images.append(contentsOf: f.bytes[(r * record + 1)..<((r + 1) * record)])
            }
        }
        return Dataset(images: images, labels: labels, channels: 3, height: 32, width: 32, classNames: classNames)
    }

    public static let fashionMNISTClasses = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    public static let cifar10Classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
}

extension Dataset {
    /// The Fashion-MNIST that ships with the package (full: 60,000 training, 10,000 test images).
    public static func fashionMNIST(train: Bool) throws(DataError) -> Dataset {
        guard let dir = Bundle.module.url(forResource: "fashion-mnist", withExtension: nil) else {
            throw DataError(.notFound, file: "fashion-mnist", "the bundled Fashion-MNIST resource is missing from the package")
        }
        return try loadIDX(directory: dir, train: train, classNames: fashionMNISTClasses)
    }

    static func loadIDX(directory: URL, train: Bool, classNames: [String]) throws(DataError) -> Dataset {
        let prefix = train ? "train" : "t10k"
        func find(_ kind: String) throws(DataError) -> URL {
            for name in ["\(prefix)-\(kind)-ubyte.gz", "\(prefix)-\(kind)-ubyte", "\(prefix)-\(kind).idx3-ubyte",
                         "\(prefix)-\(kind).idx1-ubyte"] + (kind == "images" ? ["\(prefix)-images-idx3-ubyte.gz", "\(prefix)-images-idx3-ubyte"]
                                                                              : ["\(prefix)-labels-idx1-ubyte.gz", "\(prefix)-labels-idx1-ubyte"]) {
                let u = directory.appendingPathComponent(name)
                if FileManager.default.fileExists(atPath: u.path) { return u }
            }
            throw DataError(.notFound, file: directory.path,
                            "found neither CIFAR-10 (cifar-10-binary.tar.gz, data_batch_1..5.bin, test_batch.bin) "
                            + "nor the IDX file \(prefix)-\(kind)-idx\(kind == "images" ? 3 : 1)-ubyte[.gz]")
        }
        let iu = try find("images"), lu = try find("labels")
        return try idx(images: try readFile(iu), labels: try readFile(lu), imagesFile: iu.path, labelsFile: lu.path, classNames: classNames)
    }

    /// Loads a dataset from a directory: IDX files (MNIST / Fashion-MNIST, plain or .gz), a CIFAR-10
    /// binary directory (`data_batch_1..5.bin`, `test_batch.bin`, optionally inside
    /// `cifar-10-batches-bin/`), or a directory holding `cifar-10-binary.tar.gz`.
    public static func load(directory: URL, train: Bool) throws(DataError) -> Dataset {
        let fm = FileManager.default
        guard fm.fileExists(atPath: directory.path) else {
            throw DataError(.notFound, file: directory.path, "no such file or directory")
        }
        let tarball = directory.appendingPathComponent("cifar-10-binary.tar.gz")
        if fm.fileExists(atPath: tarball.path) || directory.pathExtension == "gz" && directory.lastPathComponent.contains("cifar") {
            let url = fm.fileExists(atPath: tarball.path) ? tarball : directory
            let entries = try readTar(try readFile(url), file: url.path)
            let wanted = train ? (1...5).map { "data_batch_\($0).bin" } : ["test_batch.bin"]
            var files: [(name: String, bytes: [UInt8])] = []
            for w in wanted {
                guard let e = entries.first(where: { $0.name.hasSuffix("/" + w) || $0.name == w }) else {
                    throw DataError(.notFound, file: url.path, "the archive has no \(w)")
                }
                files.append((url.path + ":" + e.name, e.bytes))
            }
            let meta = entries.first { $0.name.hasSuffix("batches.meta.txt") }.map { classNamesFrom($0.bytes) }
            return try cifar10(files, classNames: meta ?? cifar10Classes)
        }
        for dir in [directory, directory.appendingPathComponent("cifar-10-batches-bin")] {
            let test = dir.appendingPathComponent("test_batch.bin")
            if fm.fileExists(atPath: test.path) || fm.fileExists(atPath: dir.appendingPathComponent("data_batch_1.bin").path) {
                let names = train ? (1...5).map { "data_batch_\($0).bin" } : ["test_batch.bin"]
                var files: [(name: String, bytes: [UInt8])] = []
                for n in names {
                    let u = dir.appendingPathComponent(n)
                    files.append((u.path, try readFile(u)))
                }
                let metaURL = dir.appendingPathComponent("batches.meta.txt")
                let meta = (try? Data(contentsOf: metaURL)).map { classNamesFrom([UInt8]($0)) }
                return try cifar10(files, classNames: meta ?? cifar10Classes)
            }
        }
        return try loadIDX(directory: directory, train: train, classNames: fashionMNISTClasses)
    }

    static func classNamesFrom(_ bytes: [UInt8]) -> [String] {
        String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
}
