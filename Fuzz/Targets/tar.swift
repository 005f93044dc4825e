// tar (Sources/ResidualData/Tar.swift): any bytes either list entries whose bytes lie inside the
// archive or throw a DataError.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTar(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    do {
        let entries = try readTar(bytes, file: "fuzz.tar")
        let total = entries.reduce(0) { $0 + $1.bytes.count + 512 }
        fuzzCheck(total <= bytes.count, "entries hold \(total) bytes with headers, the archive has \(bytes.count)")
    } catch {
        fuzzCheck(!error.message.isEmpty, "empty error message")
        if let o = error.offset { fuzzCheck(o >= 0 && o <= bytes.count, "error offset \(o) outside 0...\(bytes.count)") }
    }
    return 0
}
