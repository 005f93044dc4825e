// CIFAR-10 binary records and batches.meta.txt (Sources/ResidualData/Formats.swift). Input: a
// little-endian u16 length m, m bytes of batches.meta.txt, then the batch file's bytes.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCIFAR(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    guard bytes.count >= 2 else { return 0 }
    let m = min(Int(bytes[0]) | Int(bytes[1]) << 8, bytes.count - 2)
    let names = Dataset.classNamesFrom(Array(bytes[2..<(2 + m)]))
    let records = Array(bytes[(2 + m)...])
    do {
        let d = try Dataset.cifar10([("fuzz.bin", records)], classNames: names.isEmpty ? Dataset.cifar10Classes : names)
        fuzzCheck(d.images.count == d.count * 3 * 32 * 32, "\(d.images.count) bytes for \(d.count) images")
        fuzzCheck(d.labels.allSatisfy { $0 >= 0 && $0 < d.classNames.count }, "label out of range")
    } catch {
        fuzzCheck(!error.message.isEmpty, "empty error message")
    }
    return 0
}
