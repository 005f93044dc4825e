/// DEFLATE decoder (RFC 1951): stored, fixed-Huffman and dynamic-Huffman blocks.
///
/// Table-driven: a 10-bit lookup table resolves most codes in one step, a canonical-code walk the
/// rest. Bits come from a 64-bit buffer refilled 8 bytes at a time. Every read is bounds-checked
/// against the input: a truncated or corrupt stream throws, it never reads past the buffer.
struct Inflater {
    static let fastBits = 10

    struct Huffman {
        /// `symbol << 4 | length` for codes of at most `fastBits` bits (bit-reversed index); 0 = slow path.
        var fast: [UInt16]
        var counts: [Int16]      // codes per length 0...15
        var symbols: [Int16]     // symbols in canonical order

        init(lengths: ArraySlice<UInt8>) throws(InflateError) {
            counts = [Int16](repeating: 0, count: 16)
            for l in lengths { counts[Int(l)] += 1 }
            counts[0] = 0
            // Over-subscribed sets are invalid; incomplete ones are allowed (an unused code throws).
            var left = 1
            for len in 1...15 {
                left <<= 1
                left -= Int(counts[len])
                if left < 0 { throw .corrupt("over-subscribed Huffman code lengths") }
            }
            var offsets = [Int](repeating: 0, count: 16)
            for len in 1..<15 { offsets[len + 1] = offsets[len] + Int(counts[len]) }
            symbols = [Int16](repeating: 0, count: lengths.count)
            for (sym, l) in lengths.enumerated() where l != 0 {
                symbols[offsets[Int(l)]] = Int16(sym)
                offsets[Int(l)] += 1
            }
            fast = [UInt16](repeating: 0, count: 1 << Inflater.fastBits)
            var code = 0
            var next = [Int](repeating: 0, count: 16)
            for len in 1...15 { code = (code + Int(counts[len - 1])) << 1; next[len] = code }
            for (sym, l) in lengths.enumerated() where l != 0 && Int(l) <= Inflater.fastBits {
                let len = Int(l)
                let c = next[len]; next[len] += 1
                var rev = 0
                for b in 0..<len where c & (1 << b) != 0 { rev |= 1 << (len - 1 - b) }
                var i = rev
                while i < (1 << Inflater.fastBits) {
                    fast[i] = UInt16(sym << 4 | len)
                    i += 1 << len
                }
            }
        }
    }

    enum InflateError: Error {
        case truncated
        case corrupt(String)
    }

    static let lengthBase: [Int] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lengthExtra: [Int] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distBase: [Int] = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    static let distExtra: [Int] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]
    static let fixedLiteral: Huffman = {
        var l = [UInt8](repeating: 8, count: 288)
        for i in 144..<256 { l[i] = 9 }
        for i in 256..<280 { l[i] = 7 }
        return try! Huffman(lengths: l[...])
    }()
    static let fixedDistance: Huffman = try! Huffman(lengths: [UInt8](repeating: 5, count: 30)[...])

    let input: UnsafeRawBufferPointer
    var position: Int          // next byte to load into the bit buffer
    var bitBuffer: UInt64 = 0
    var bitCount = 0
    var out: UnsafeMutablePointer<UInt8>
    var outCount = 0
    var outCapacity: Int
    let outputLimit: Int

    init(_ input: UnsafeRawBufferPointer, start: Int, expectedSize: Int, outputLimit: Int) {
        self.input = input
        position = start
        outCapacity = max(1024, min(expectedSize, outputLimit))
        out = .allocate(capacity: outCapacity)
        self.outputLimit = outputLimit
    }

    /// Takes the decompressed bytes and frees the working buffer.
    mutating func finish() -> [UInt8] {
        let bytes = Array(UnsafeBufferPointer(start: out, count: outCount))
        out.deallocate()
        outCapacity = 0
        return bytes
    }

    func discard() { out.deallocate() }

    @inline(__always) mutating func reserve(_ extra: Int) throws(InflateError) {
        guard outCount + extra <= outputLimit else { throw .corrupt("output exceeds \(outputLimit) bytes") }
        if outCount + extra > outCapacity {
            let newCapacity = min(max(outCapacity * 2, outCount + extra), max(outputLimit, outCount + extra))
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
            p.update(from: out, count: outCount)
            out.deallocate()
            out = p
            outCapacity = newCapacity
        }
    }

    /// The byte offset of the first byte not consumed (after the final block, byte-aligned).
    var consumedOffset: Int { position - bitCount / 8 }

    @inline(__always) mutating func refill() {
        if position + 8 <= input.count {
            let word = input.loadUnaligned(fromByteOffset: position, as: UInt64.self).littleEndian
            bitBuffer |= word << UInt64(bitCount)
            let take = (63 - bitCount) >> 3
            position += take
            bitCount += take * 8
        } else {
            while bitCount <= 56 && position < input.count {
                bitBuffer |= UInt64(input[position]) << UInt64(bitCount)
                position += 1
                bitCount += 8
            }
        }
    }

    @inline(__always) mutating func bits(_ n: Int) throws(InflateError) -> Int {
        if bitCount < n {
            refill()
            if bitCount < n { throw .truncated }
        }
        let v = Int(bitBuffer & ((1 << UInt64(n)) - 1))
        bitBuffer >>= UInt64(n)
        bitCount -= n
        return v
    }

    @inline(__always) mutating func decode(_ h: Huffman) throws(InflateError) -> Int {
        if bitCount < 15 { refill() }
        let entry = Int(h.fast[Int(bitBuffer & UInt64((1 << Inflater.fastBits) - 1))])
        let len = entry & 15
        if len != 0 && len <= bitCount {
            bitBuffer >>= UInt64(len)
            bitCount -= len
            return entry >> 4
        }
        // Canonical walk, one bit at a time (codes longer than fastBits, or near the end of input).
        var code = 0, first = 0, index = 0
        for l in 1...15 {
            code |= try bits(1)
            let count = Int(h.counts[l])
            if code - count < first { return Int(h.symbols[index + (code - first)]) }
            index += count
            first += count
            first <<= 1
            code <<= 1
        }
        throw .corrupt("invalid Huffman code")
    }

    /// Inflates one complete DEFLATE stream.
    mutating func run() throws(InflateError) {
        var final = false
        while !final {
            final = try bits(1) == 1
            switch try bits(2) {
            case 0: try stored()
            case 1: try codes(Inflater.fixedLiteral, Inflater.fixedDistance)
            case 2:
                let (lit, dist) = try dynamicTables()
                try codes(lit, dist)
            default: throw .corrupt("invalid block type 3")
            }
        }
    }

    mutating func stored() throws(InflateError) {
        // Drop to a byte boundary, then give back whole buffered bytes.
        _ = try bits(bitCount & 7)
        position -= bitCount / 8
        bitBuffer = 0
        bitCount = 0
        guard position + 4 <= input.count else { throw .truncated }
        let len = Int(input[position]) | Int(input[position + 1]) << 8
        let nlen = Int(input[position + 2]) | Int(input[position + 3]) << 8
        guard len == ~nlen & 0xFFFF else { throw .corrupt("stored block length \(len) does not match its complement") }
        position += 4
        guard position + len <= input.count else { throw .truncated }
        try reserve(len)
        if len > 0 { UnsafeMutableRawPointer(out + outCount).copyMemory(from: input.baseAddress! + position, byteCount: len) }
        outCount += len
        position += len
    }

    mutating func dynamicTables() throws(InflateError) -> (Huffman, Huffman) {
        let hlit = try bits(5) + 257, hdist = try bits(5) + 1, hclen = try bits(4) + 4
        guard hlit <= 286 && hdist <= 30 else { throw .corrupt("too many length or distance codes") }
        let order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
        var clen = [UInt8](repeating: 0, count: 19)
        for i in 0..<hclen { clen[order[i]] = UInt8(try bits(3)) }
        let codeLengths = try Huffman(lengths: clen[...])
        var lengths = [UInt8](repeating: 0, count: hlit + hdist)
        var i = 0
        while i < hlit + hdist {
            let sym = try decode(codeLengths)
            if sym < 16 { lengths[i] = UInt8(sym); i += 1; continue }
            var repeatValue: UInt8 = 0, count = 0
            switch sym {
            case 16:
                guard i > 0 else { throw .corrupt("repeat of a code length with no previous length") }
                repeatValue = lengths[i - 1]; count = 3 + (try bits(2))
            case 17: count = 3 + (try bits(3))
            default: count = 11 + (try bits(7))
            }
            guard i + count <= hlit + hdist else { throw .corrupt("code lengths overflow the table") }
            for _ in 0..<count { lengths[i] = repeatValue; i += 1 }
        }
        guard lengths[256] != 0 else { throw .corrupt("no end-of-block code") }
        return (try Huffman(lengths: lengths[0..<hlit]), try Huffman(lengths: lengths[hlit...]))
    }

    mutating func codes(_ lit: Huffman, _ dist: Huffman) throws(InflateError) {
        while true {
            let sym = try decode(lit)
            if sym < 256 {
                if outCount >= outCapacity { try reserve(1) }
                guard outCount < outputLimit else { throw .corrupt("output exceeds \(outputLimit) bytes") }
                out[outCount] = UInt8(sym)
                outCount += 1
                continue
            }
            if sym == 256 { return }
            let li = sym - 257
            guard li < 29 else { throw .corrupt("invalid length symbol \(sym)") }
            let length = Inflater.lengthBase[li] + (try bits(Inflater.lengthExtra[li]))
            let ds = try decode(dist)
            guard ds < 30 else { throw .corrupt("invalid distance symbol \(ds)") }
            let distance = Inflater.distBase[ds] + (try bits(Inflater.distExtra[ds]))
            guard distance <= outCount else { throw .corrupt("distance \(distance) reaches before the start of the output") }
            try reserve(length)
            // Byte by byte, forwards: an overlapping match (distance < length) repeats the pattern.
            let src = out + (outCount - distance), dst = out + outCount
            for k in 0..<length { dst[k] = src[k] }
            outCount += length
        }
    }
}

/// Decompresses gzip data (RFC 1952), all members, verifying each member's CRC-32 and length.
/// `maximumOutput` bounds the decompressed size (a small corrupt file cannot ask for terabytes).
public func gunzip(_ data: [UInt8], file: String = "<memory>", maximumOutput: Int = 1 << 32) throws(DataError) -> [UInt8] {
    var out: [UInt8] = []
    var offset = 0
    var result: Result<Void, DataError> = .success(())
    data.withUnsafeBytes { raw in
        do throws(DataError) {
            repeat {
                let member = try gunzipMember(raw, at: offset, file: file, maximumOutput: maximumOutput - out.count)
                out.append(contentsOf: member.bytes)
                offset = member.end
                // Trailing zero bytes (padding some tools add) end the stream; anything else must be
                // another member (gunzipMember then reports a bad magic at `offset`).
                if raw[offset...].allSatisfy({ $0 == 0 }) { break }
            } while offset < raw.count
        } catch {
            result = .failure(error)
        }
    }
    try result.get()
    return out
}

private func gunzipMember(_ raw: UnsafeRawBufferPointer, at start: Int, file: String, maximumOutput: Int)
    throws(DataError) -> (bytes: [UInt8], end: Int) {
    func need(_ n: Int, _ at: Int, _ what: String) throws(DataError) {
        if at + n > raw.count { throw DataError(.truncated, file: file, offset: at, "file ends inside the \(what)") }
    }
    try need(2, start, "gzip header (10 bytes)")
    guard raw[start] == 0x1F && raw[start + 1] == 0x8B else {
        throw DataError(.badMagic, file: file, offset: start,
                        "expected the gzip magic 1f 8b\(start > 0 ? " (another member, or trailing garbage)" : ""), "
                        + "found \(hex(raw[start])) \(hex(raw[start + 1]))")
    }
    try need(10, start, "gzip header (10 bytes)")
    guard raw[start + 2] == 8 else {
        throw DataError(.unsupported, file: file, offset: start + 2, "compression method \(raw[start + 2]) is not deflate (8)")
    }
    let flags = raw[start + 3]
    guard flags & 0xE0 == 0 else { throw DataError(.corrupt, file: file, offset: start + 3, "reserved gzip flag bits set") }
    var p = start + 10
    if flags & 4 != 0 {
        try need(2, p, "FEXTRA length")
        let xlen = Int(raw[p]) | Int(raw[p + 1]) << 8
        p += 2
        try need(xlen, p, "FEXTRA field")
        p += xlen
    }
    for flag: UInt8 in [8, 16] where flags & flag != 0 {       // FNAME, FCOMMENT: zero-terminated
        while true {
            try need(1, p, flag == 8 ? "file name" : "comment")
            p += 1
            if raw[p - 1] == 0 { break }
        }
    }
    if flags & 2 != 0 {
        try need(2, p, "header CRC")
        var c = CRC32()
        c.update(UnsafeRawBufferPointer(rebasing: raw[start..<p]))
        let stored = UInt32(raw[p]) | UInt32(raw[p + 1]) << 8
        guard stored == c.value & 0xFFFF else {
            throw DataError(.badChecksum, file: file, offset: p, "header CRC16 \(stored) does not match \(c.value & 0xFFFF)")
        }
        p += 2
    }
    // ISIZE (mod 2^32) sizes the output buffer; it is only a hint until verified. DEFLATE expands
    // at most 1032:1 (a 258-byte match costs at least 2 bits), so a small corrupt file whose last
    // four bytes claim 4 GB does not get a 4 GB buffer: the hint is capped by what the remaining
    // compressed bytes could possibly produce.
    let hint = raw.count >= 4 ? Int(raw.loadUnaligned(fromByteOffset: raw.count - 4, as: UInt32.self).littleEndian) : 0
    let possible = (raw.count - p) * 1032
    var inflater = Inflater(raw, start: p, expectedSize: min(hint, possible, 1 << 30), outputLimit: maximumOutput)
    do throws(Inflater.InflateError) {
        try inflater.run()
    } catch {
        inflater.discard()
        switch error {
        case .truncated:
            throw DataError(.truncated, file: file, offset: raw.count, "compressed data ends before the final deflate block")
        case .corrupt(let why):
            throw DataError(.corrupt, file: file, offset: inflater.consumedOffset, "corrupt deflate data: \(why)")
        }
    }
    let end = inflater.consumedOffset
    let output = inflater.finish()
    try need(8, end, "gzip trailer (CRC-32 and size)")
    let crc = raw.loadUnaligned(fromByteOffset: end, as: UInt32.self).littleEndian
    let isize = raw.loadUnaligned(fromByteOffset: end + 4, as: UInt32.self).littleEndian
    var c = CRC32()
    output.withUnsafeBytes { c.update($0) }
    guard c.value == crc else {
        throw DataError(.badChecksum, file: file, offset: end,
                        "CRC-32 of the decompressed data is \(hex32(c.value)), the trailer says \(hex32(crc))")
    }
    guard UInt32(truncatingIfNeeded: output.count) == isize else {
        throw DataError(.corrupt, file: file, offset: end + 4,
                        "decompressed size \(output.count) does not match the trailer's \(isize)")
    }
    return (output, end + 8)
}

func hex(_ b: UInt8) -> String { String(b, radix: 16).count == 1 ? "0" + String(b, radix: 16) : String(b, radix: 16) }
func hex32(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }
