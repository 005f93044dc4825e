// Shared by every fuzz target: the libFuzzer entry point hands over a pointer and a length;
// targets take a copy as `[UInt8]` (what the parsers receive after reading a file) and may split it.

@inline(__always)
func fuzzBytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}

/// The first four bytes, little-endian, or 0.
func leadingUInt32(_ bytes: [UInt8]) -> Int {
    guard bytes.count >= 4 else { return 0 }
    return Int(bytes[0]) | Int(bytes[1]) << 8 | Int(bytes[2]) << 16 | Int(bytes[3]) << 24
}

/// Fails the run: libFuzzer reports the input as a crash. For properties the parser must keep
/// (a successful parse is internally consistent), not for the errors it throws.
func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError("property violated: \(message())") }
}
