/// A reader for tar archives (POSIX ustar and old-style headers; GNU long names), enough to read
/// `cifar-10-binary.tar.gz` as distributed. Header checksums are verified; sizes are bounds-checked.
public struct TarEntry: Sendable {
    public let name: String
    public let bytes: [UInt8]
}

public func readTar(_ data: [UInt8], file: String = "<memory>") throws(DataError) -> [TarEntry] {
    var entries: [TarEntry] = []
    var offset = 0
    var longName: String? = nil
    func field(_ at: Int, _ len: Int) -> ArraySlice<UInt8> { data[(offset + at)..<(offset + at + len)] }
    func octal(_ at: Int, _ len: Int, _ what: String) throws(DataError) -> Int {
        var v = 0
        for b in field(at, len) {
            if b == 0 || b == 0x20 { if v > 0 { break } else { continue } }
            guard b >= 0x30 && b <= 0x37 else {
                throw DataError(.corrupt, file: file, offset: offset + at, "tar \(what) field is not octal")
            }
            guard v < (1 << 40) else { throw DataError(.corrupt, file: file, offset: offset + at, "tar \(what) too large") }
            v = v * 8 + Int(b - 0x30)
        }
        return v
    }
    func string(_ at: Int, _ len: Int) -> String {
        let f = field(at, len)
        return String(decoding: f.prefix { $0 != 0 }, as: UTF8.self)
    }
    while true {
        guard offset + 512 <= data.count else {
            if offset == data.count && !entries.isEmpty { break }   // some writers omit the end blocks
            throw DataError(.truncated, file: file, offset: offset, "tar archive ends inside a 512-byte header")
        }
        if field(0, 512).allSatisfy({ $0 == 0 }) { break }          // end of archive
        let stored = try octal(148, 8, "checksum")
        var sum = 0
        for (i, b) in field(0, 512).enumerated() { sum += (148..<156).contains(i) ? 0x20 : Int(b) }
        guard sum == stored else {
            throw DataError(.badChecksum, file: file, offset: offset + 148, "tar header checksum \(stored) does not match \(sum)")
        }
        let size = try octal(124, 12, "size")
        let type = data[offset + 156]
        var name = string(0, 100)
        if string(257, 6).hasPrefix("ustar") {
            let prefix = string(345, 155)
            if !prefix.isEmpty { name = prefix + "/" + name }
        }
        let start = offset + 512
        guard start + size <= data.count else {
            throw DataError(.truncated, file: file, offset: start, "tar entry '\(name)' needs \(size) bytes, the archive has \(data.count - start)")
        }
        let body = Array(data[start..<(start + size)])
        offset = start + (size + 511) / 512 * 512
        guard offset <= data.count else {
            throw DataError(.truncated, file: file, offset: data.count, "tar entry '\(name)' is not padded to a 512-byte block: the archive is cut short")
        }
        switch type {
        case UInt8(ascii: "L"):
            longName = String(decoding: body.prefix { $0 != 0 }, as: UTF8.self)
        case 0, UInt8(ascii: "0"), UInt8(ascii: "7"):
            entries.append(TarEntry(name: longName ?? name, bytes: body))
            longName = nil
        default:
            longName = nil    // directories, links, pax headers: nothing to read
        }
    }
    return entries
}
