// gzip / DEFLATE (Sources/ResidualData/Inflate.swift): any bytes either decompress or throw a
// DataError. Output is capped at 256 MiB (the parameter the API offers) so a legitimate
// small-to-huge expansion is not mistaken for an out-of-memory bug.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGzip(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let limit = 1 << 28
    do {
        let out = try gunzip(bytes, file: "fuzz.gz", maximumOutput: limit)
        fuzzCheck(out.count <= limit, "output \(out.count) exceeds the limit")
    } catch {
        fuzzCheck(!error.message.isEmpty, "empty error message")
        if let o = error.offset { fuzzCheck(o >= 0 && o <= bytes.count, "error offset \(o) outside 0...\(bytes.count)") }
    }
    return 0
}
