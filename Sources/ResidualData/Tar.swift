/// A file read from a tar archive.
public struct TarEntry: Sendable {
    public let name: String
    public let bytes: [UInt8]
}

/// Reads the regular files of a tar archive, enough to open `cifar-10-binary.tar.gz` as
/// distributed (a ustar archive written by GNU tar).
///
/// What is understood, and why:
/// - **v7 and POSIX ustar headers** (name, ustar `prefix`, octal size, header checksum): every
///   tar writer produces these.
/// - **GNU long names** (a `././@LongLink` entry of type `L` before the entry it names) and **pax
///   extended headers** (type `x`: the `path` and `size` records override the next header's
///   fields): the two ways modern `tar` stores names over 100 bytes, so an archive someone re-packs
///   with long paths still reads. Global pax headers (`g`) and GNU long link names (`K`) carry
///   nothing this reader needs and are skipped.
/// - Directories, links, devices and FIFOs carry no data and are skipped; GNU sparse files (`S`)
///   and multi-volume continuations (`M`) would need reassembly and throw `unsupported` rather than
///   yield wrong bytes. Base-256 (binary) size fields only occur for members over 8 GB and also
///   throw `unsupported`.
///
/// The archive is untrusted: every header checksum is verified, every size is checked against the
/// bytes present before anything is copied, and every malformed field throws a ``DataError`` with
/// the byte offset of the header.
public func readTar(_ data: [UInt8], file: String = "<memory>") throws(DataError) -> [TarEntry] {
    var entries: [TarEntry] = []
    var offset = 0
    var longName: String? = nil        // from a GNU `L` entry, for the next entry
    var paxPath: String? = nil         // from a pax `x` header, for the next entry
    var paxSize: Int? = nil

    /// A numeric header field: octal digits, optionally padded by leading spaces and ended by NUL
    /// or space (writers differ).
    func octal(_ at: Int, _ len: Int, _ what: String) throws(DataError) -> Int {
        let lo = offset + at
        if data[lo] & 0x80 != 0 {
            throw DataError(.unsupported, file: file, offset: lo, "tar \(what) uses the base-256 encoding (members over 8 GB)")
        }
        var v = 0, i = lo, digits = 0
        while i < lo + len && data[i] == 0x20 { i += 1 }
        while i < lo + len {
            let b = data[i]
            if b == 0 || b == 0x20 { break }
            guard b >= 0x30 && b <= 0x37 else {
                throw DataError(.corrupt, file: file, offset: i, "tar \(what) field has the non-octal byte \(hex(b))")
            }
            v = v * 8 + Int(b - 0x30)      // at most 12 digits: no overflow
            digits += 1
            i += 1
        }
        guard digits > 0 else { throw DataError(.corrupt, file: file, offset: lo, "tar \(what) field is empty") }
        return v
    }
    func string(_ at: Int, _ len: Int) -> String {
        let f = data[(offset + at)..<(offset + at + len)]
        return String(decoding: f.prefix { $0 != 0 }, as: UTF8.self)
    }

    while true {
        guard offset + 512 <= data.count else {
            if offset == data.count && !entries.isEmpty { break }   // some writers omit the end blocks
            throw DataError(.truncated, file: file, offset: offset,
                            "tar archive ends inside a 512-byte header (\(data.count - offset) bytes left)")
        }
        if data[offset..<(offset + 512)].allSatisfy({ $0 == 0 }) { break }   // end of archive
        let stored = try octal(148, 8, "checksum")
        var sum = 0
        for i in 0..<512 { sum += (148..<156).contains(i) ? 0x20 : Int(data[offset + i]) }
        guard sum == stored else {
            throw DataError(.badChecksum, file: file, offset: offset + 148,
                            "tar header checksum is \(sum), the header says \(stored): not a tar archive, or a damaged one")
        }
        let headerOffset = offset
        let size: Int
        if let paxSize { size = paxSize } else { size = try octal(124, 12, "size") }
        let type = data[offset + 156]
        var name = string(0, 100)
        if string(257, 6).hasPrefix("ustar") {
            let prefix = string(345, 155)
            if !prefix.isEmpty { name = prefix + "/" + name }
        }
        let start = offset + 512
        guard size <= data.count - start else {
            throw DataError(.truncated, file: file, offset: start,
                            "tar entry '\(name)' needs \(size) bytes, the archive has \(data.count - start) after its header")
        }
        let body = data[start..<(start + size)]
        // The next header follows the data, padded to 512 bytes. Writers always pad, so a file that
        // ends inside the padding was cut short (the end-of-archive blocks may be missing, though).
        offset = start + (size + 511) / 512 * 512
        guard offset <= data.count else {
            throw DataError(.truncated, file: file, offset: data.count,
                            "tar entry '\(name)' is not padded to a 512-byte block: the archive is cut short")
        }
        switch type {
        case UInt8(ascii: "L"):
            longName = String(decoding: body.prefix { $0 != 0 }, as: UTF8.self)
        case UInt8(ascii: "x"):
            (paxPath, paxSize) = try paxRecords(body, file: file, offset: start)
        case 0, UInt8(ascii: "0"), UInt8(ascii: "7"):
            entries.append(TarEntry(name: paxPath ?? longName ?? name, bytes: Array(body)))
            longName = nil; paxPath = nil; paxSize = nil
        case UInt8(ascii: "S"), UInt8(ascii: "M"):
            throw DataError(.unsupported, file: file, offset: headerOffset + 156,
                            "tar entry '\(name)' is a GNU \(type == UInt8(ascii: "S") ? "sparse file" : "multi-volume continuation")")
        default:
            // Directories, links, devices, FIFOs, global pax headers, GNU long link names.
            longName = nil; paxPath = nil; paxSize = nil
        }
    }
    return entries
}

/// The `path` and `size` of a pax extended header: records `"<length> <key>=<value>\n"`, where
/// `<length>` counts the whole record.
private func paxRecords(_ body: ArraySlice<UInt8>, file: String, offset: Int) throws(DataError) -> (String?, Int?) {
    var path: String? = nil, size: Int? = nil
    var i = body.startIndex
    while i < body.endIndex {
        let recordStart = i
        var length = 0
        while i < body.endIndex && body[i] >= 0x30 && body[i] <= 0x39 && length < 1 << 30 {
            length = length * 10 + Int(body[i] - 0x30)
            i += 1
        }
        let at = offset + (recordStart - body.startIndex)
        guard i < body.endIndex, body[i] == 0x20, length > i - recordStart + 1,
              length <= body.endIndex - recordStart, body[recordStart + length - 1] == 0x0A else {
            throw DataError(.corrupt, file: file, offset: at, "malformed pax extended header record")
        }
        let record = body[(i + 1)..<(recordStart + length - 1)]
        if let eq = record.firstIndex(of: UInt8(ascii: "=")) {
            let key = String(decoding: record[..<eq], as: UTF8.self)
            let value = String(decoding: record[(eq + 1)...], as: UTF8.self)
            if key == "path" { path = value }
            if key == "size" {
                guard let n = Int(value), n >= 0 else {
                    throw DataError(.corrupt, file: file, offset: at, "pax size '\(value)' is not a byte count")
                }
                size = n
            }
        }
        i = recordStart + length
    }
    return (path, size)
}
