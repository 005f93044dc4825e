import Testing
import Foundation
import ResidualData

/// A 512-byte ustar header with a correct checksum (fields as tar writes them).
func tarHeader(name: String, size: Int, type: UInt8 = UInt8(ascii: "0"), sizeField: [UInt8]? = nil) -> [UInt8] {
    var h = [UInt8](repeating: 0, count: 512)
    func put(_ s: String, _ at: Int) { for (i, b) in s.utf8.enumerated() { h[at + i] = b } }
    put(name, 0)
    put("0000644", 100); put("0000000", 108); put("0000000", 116)
    if let sizeField { for (i, b) in sizeField.enumerated() { h[124 + i] = b } } else {
        put(String(repeating: "0", count: 11 - String(size, radix: 8).count) + String(size, radix: 8), 124)
    }
    put("00000000000", 136)
    h[156] = type
    put("ustar", 257); put("00", 263)
    for i in 148..<156 { h[i] = 0x20 }
    let sum = h.reduce(0) { $0 + Int($1) }
    put(String(repeating: "0", count: 6 - String(sum, radix: 8).count) + String(sum, radix: 8), 148)
    h[154] = 0
    return h
}

func tarEntry(_ name: String, _ body: [UInt8], type: UInt8 = UInt8(ascii: "0")) -> [UInt8] {
    tarHeader(name: name, size: body.count, type: type) + body + [UInt8](repeating: 0, count: (512 - body.count % 512) % 512)
}

@Suite struct TarTests {
    let endBlocks = [UInt8](repeating: 0, count: 1024)

    @Test func cifarTarball() throws {
        let tar = try gunzip(fixture("tarball/cifar-10-binary.tar.gz"))
        let entries = try readTar(tar)
        #expect(entries.map(\.name) == ["cifar-10-batches-bin/batches.meta.txt", "cifar-10-batches-bin/test_batch.bin"])
        #expect(entries[1].bytes == fixture("cifar-10-batches-bin/test_batch.bin"))
    }

    /// Names over 100 bytes, as Python's tarfile (and GNU tar) write them: a pax `path` record, or
    /// a GNU `././@LongLink` entry. Directories are skipped.
    @Test(arguments: ["pax-long-name.tar", "gnu-long-name.tar"])
    func longNames(_ file: String) throws {
        let entries = try readTar(fixture("tarball/" + file), file: file)
        let long = "cifar-10-batches-bin/" + String(repeating: "a-directory-name-well-over-one-hundred-bytes-long-", count: 3)
            + "/test_batch.bin"
        #expect(entries.map(\.name) == [long, "short.txt"])
        #expect(entries[0].bytes == (0..<3).flatMap { _ in (0..<256).map(UInt8.init) } + Array("end".utf8))
        #expect(entries[1].bytes == Array("hello".utf8))
    }

    @Test func handWrittenHeaders() throws {
        let ok = tarEntry("a.bin", [1, 2, 3]) + endBlocks
        #expect(try readTar(ok).map(\.bytes) == [[1, 2, 3]])
        // No end-of-archive blocks (some writers): accepted at a block boundary.
        #expect(try readTar(tarEntry("a.bin", [1, 2, 3])).count == 1)
        // A pax header whose `size` overrides the octal field.
        let pax = Array("17 path=long.bin\n10 size=2\n".utf8)
        let withPax = tarEntry("PaxHeader", pax, type: UInt8(ascii: "x")) + tarEntry("short", [9, 8]) + endBlocks
        let e = try readTar(withPax)
        #expect(e.map(\.name) == ["long.bin"] && e[0].bytes == [9, 8])
        // Malformed pax records.
        for bad in ["99 path=x\n", "5 path=x\n", "x path\n", "17 path=long.bin!"] {
            expectDataError(.corrupt) { _ = try readTar(tarEntry("P", Array(bad.utf8), type: UInt8(ascii: "x")) + tarEntry("f", [1]) + endBlocks) }
        }
        // GNU sparse files and base-256 sizes are refused, not misread.
        expectDataError(.unsupported) { _ = try readTar(tarEntry("s", [0], type: UInt8(ascii: "S")) + endBlocks) }
        let base256 = tarHeader(name: "huge", size: 0, sizeField: [0x80] + [UInt8](repeating: 0, count: 10) + [1])
        expectDataError(.unsupported) { _ = try readTar(base256 + endBlocks) }
        // A size field that is not octal, or claims more than the archive holds.
        let nonOctal = tarHeader(name: "n", size: 0, sizeField: Array("0000000009a".utf8))
        #expect(expectDataError(.corrupt) { _ = try readTar(nonOctal + endBlocks) }?.offset == 124 + 9)   // the "9"
        let huge = tarHeader(name: "big", size: 0o77777777777)
        let e2 = expectDataError(.truncated) { _ = try readTar(huge + endBlocks, file: "big.tar") }
        #expect(e2?.description.contains("big.tar") == true && e2?.description.contains("8589934591 bytes") == true)
    }

    @Test func damaged() throws {
        let tar = try gunzip(fixture("tarball/cifar-10-binary.tar.gz"))
        var bad = tar; bad[10] ^= 0x20
        #expect(expectDataError(.badChecksum) { _ = try readTar(bad, file: "bad.tar") }?.offset == 148)
        bad = tar; bad[1024 + 124 + 5] ^= 0x01        // the second header's size field
        expectDataError(.badChecksum) { _ = try readTar(bad, file: "bad.tar") }
        for cut in [1, 300, 511, 700, 1023, 1024 + 511, 1536 + 61_460 / 2, 1536 + 61_460] {
            expectDataError(.truncated) { _ = try readTar(Array(tar.prefix(cut)), file: "short.tar") }
        }
        // Not a tar at all: a gzip file, a CIFAR batch.
        #expect(throws: DataError.self) { try readTar(fixture("tarball/cifar-10-binary.tar.gz")) }
        #expect(throws: DataError.self) { try readTar(fixture("cifar-10-batches-bin/test_batch.bin")) }
    }
}
