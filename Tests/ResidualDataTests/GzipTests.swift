import Testing
import Foundation
import ResidualData

@Suite struct GzipTests {
    @Test(arguments: ["gzip-level0.gz", "gzip-level9.gz", "gzip-two-members.gz", "gzip-header-fields.gz"])
    func decodesEveryVariant(_ name: String) throws {
        #expect(try gunzip(fixture(name), file: name) == fixture("payload.bin"))
    }

    @Test func crc32KnownValues() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([]) == 0)
        #expect(CRC32.checksum(fixture("payload.bin")) == 4_276_859_450)
    }

    @Test func truncatedAnywhereThrows() {
        let good = fixture("gzip-level9.gz")
        for cut in [0, 1, 5, 10, 12, 40, good.count / 2, good.count - 9, good.count - 4, good.count - 1] {
            #expect(throws: DataError.self, "cut at \(cut)") { try gunzip(Array(good[0..<cut]), file: "cut") }
        }
        expectDataError(.truncated) { _ = try gunzip(Array(good[0..<(good.count - 4)]), file: "t") }
    }

    @Test func damagedBytesThrow() {
        let good = fixture("gzip-level9.gz")
        var magic = good; magic[0] = 0x1E
        let e = expectDataError(.badMagic) { _ = try gunzip(magic, file: "bad.gz") }
        #expect(e?.description.contains("bad.gz") == true && e?.description.contains("1e 8b") == true)
        var crc = good; crc[crc.count - 8] ^= 0xFF
        expectDataError(.badChecksum) { _ = try gunzip(crc, file: "crc.gz") }
        var size = good; size[size.count - 1] ^= 0x01
        expectDataError(.corrupt) { _ = try gunzip(size, file: "size.gz") }
        var method = good; method[2] = 7
        expectDataError(.unsupported) { _ = try gunzip(method, file: "m.gz") }
        var header = fixture("gzip-header-fields.gz"); header[14] ^= 0x40   // inside FEXTRA, covered by FHCRC
        expectDataError(.badChecksum) { _ = try gunzip(header, file: "h.gz") }
        // Every single-byte corruption of the compressed stream is caught (by the decoder or the CRC).
        for i in stride(from: 10, to: good.count - 8, by: 7) {
            var bad = good; bad[i] ^= 0x55
            #expect(throws: DataError.self, "flip at \(i)") { try gunzip(bad, file: "flip") }
        }
    }

    /// Damaged copies of a real distributed file (`t10k-labels-idx1-ubyte.gz`, 5,125 bytes):
    /// cut at many offsets, bytes flipped in the header, the compressed stream and the trailer.
    @Test func damagedRealFile() throws {
        let good = bundled("t10k-labels-idx1-ubyte.gz")
        let name = "t10k-labels-idx1-ubyte.gz"
        #expect(try gunzip(good, file: name).count == 10_008)
        // Cut anywhere: inside the header, the stream, the trailer. Always `truncated`, and the
        // message names the file.
        for cut in [0, 1, 2, 3, 9, 10, 11, 64, 1000, good.count / 2, good.count - 9, good.count - 8, good.count - 5, good.count - 1] {
            let e = expectDataError(.truncated) { _ = try gunzip(Array(good[0..<cut]), file: name) }
            #expect(e?.description.hasPrefix(name) == true, "\(e.map(String.init(describing:)) ?? "")")
        }
        // Header fields.
        var b = good; b[1] = 0x8C
        #expect(expectDataError(.badMagic) { _ = try gunzip(b, file: name) }?.offset == 0)
        b = good; b[2] = 0
        #expect(expectDataError(.unsupported) { _ = try gunzip(b, file: name) }?.offset == 2)
        b = good; b[3] = 0x20                                     // a reserved flag bit
        expectDataError(.corrupt) { _ = try gunzip(b, file: name) }
        b = good; b[3] = 0x02                                     // FHCRC claimed: the 2 bytes read are not the CRC16
        expectDataError(.badChecksum) { _ = try gunzip(b, file: name) }
        b = good; b[3] = 0x08                                     // FNAME claimed: the stream is read as a name
        #expect(throws: DataError.self) { try gunzip(b, file: name) }
        // Every 13th byte of the compressed stream, XORed: caught by the decoder or the CRC-32.
        var kinds: Set<DataError.Kind> = []
        for i in stride(from: 10, to: good.count - 8, by: 13) {
            var bad = good; bad[i] ^= 0x5A
            do { _ = try gunzip(bad, file: name); Issue.record("flip at \(i) went unnoticed") } catch { kinds.insert(error.kind) }
        }
        #expect(kinds.isSubset(of: [.corrupt, .badChecksum, .truncated]) && kinds.contains(.badChecksum) && kinds.contains(.corrupt))
        // Trailer: CRC-32 and ISIZE.
        b = good; b[good.count - 6] ^= 1
        let crc = expectDataError(.badChecksum) { _ = try gunzip(b, file: name) }
        #expect(crc?.offset == good.count - 8 && crc?.description.contains("CRC-32") == true)
        b = good; b[good.count - 3] ^= 1
        #expect(expectDataError(.corrupt) { _ = try gunzip(b, file: name) }?.offset == good.count - 4)
        // Trailing garbage after a complete member, and zero padding (accepted).
        expectDataError(.badMagic) { _ = try gunzip(good + [0x41, 0x42, 0x43], file: name) }
        #expect(try gunzip(good + [0, 0, 0, 0], file: name).count == 10_008)
        // A decompressed size limit (a small file that would inflate to gigabytes is stopped).
        expectDataError(.corrupt) { _ = try gunzip(good, file: name, maximumOutput: 10_000) }
    }

    /// The big image file: cut short and damaged in its first and last megabyte.
    @Test func damagedRealImageFile() throws {
        let good = bundled("t10k-images-idx3-ubyte.gz")
        for cut in [good.count / 3, good.count - 100] {
            expectDataError(.truncated) { _ = try gunzip(Array(good[0..<cut]), file: "t10k-images") }
        }
        for i in [20, 1 << 20, good.count - 50_000] {
            var bad = good; bad[i] ^= 0xFF
            #expect(throws: DataError.self, "flip at \(i)") { try gunzip(bad, file: "t10k-images") }
        }
    }

    /// A tiny file whose trailer claims 4 GB must not get a 4 GB buffer (the hint is capped by the
    /// 1032:1 limit of DEFLATE) and fails cleanly.
    @Test func absurdSizeHint() throws {
        // A fixed-Huffman block holding just end-of-block, then a trailer claiming ISIZE 0xFFFFFFFF.
        let bytes: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3, 0x03, 0x00, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]
        expectDataError(.corrupt) { _ = try gunzip(bytes, file: "claims-4GB.gz") }
        var empty = bytes; empty[16...19] = [0, 0, 0, 0]
        #expect(try gunzip(empty, file: "empty.gz") == [])
    }

    @Test func realFileInflatesWithMatchingCRC() throws {
        let data = try Dataset.fashionMNIST(train: false)
        #expect(data.count == 10_000 && data.height == 28 && data.width == 28 && data.channels == 1)
        #expect(Array(data.labels.prefix(10)) == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
    }
}

