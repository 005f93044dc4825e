// IDX (Sources/ResidualData/Formats.swift): the whole input as one IDX array, and the input split
// in two (first 4 bytes, little-endian, modulo the rest's length: where the images file ends) as an
// images file and a labels file for `Dataset.idx`, which cross-checks counts and labels.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIDX(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    do {
        let a = try IDXArray(bytes, file: "fuzz.idx")
        fuzzCheck(a.shape.reduce(1, *) == a.bytes.count, "shape \(a.shape) for \(a.bytes.count) bytes")
    } catch {
        fuzzCheck(!error.message.isEmpty, "empty error message")
    }
    guard bytes.count >= 4 else { return 0 }
    let rest = Array(bytes[4...])
    let split = leadingUInt32(bytes) % (rest.count + 1)
    do {
        let d = try Dataset.idx(images: Array(rest[..<split]), labels: Array(rest[split...]),
                                classNames: Dataset.fashionMNISTClasses)
        fuzzCheck(d.images.count == d.count * d.imageSize, "\(d.images.count) bytes for \(d.count) images")
        fuzzCheck(d.labels.allSatisfy { $0 >= 0 && $0 < 10 }, "label out of range")
    } catch {
        fuzzCheck(!error.message.isEmpty, "empty error message")
    }
    return 0
}
