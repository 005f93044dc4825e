import Foundation
import ResidualAutodiff

// safetensors (Sources/ResidualNN/SafeTensors.swift): any bytes either parse or throw a
// CheckpointError. A successful parse must survive a round trip: written back as F32 and read
// again, every tensor has the same shape and the same bits (F16/BF16/F64/I64/I32 were converted
// to Float on the first read, so the second read sees exactly those Floats).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensors(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let contents: SafeTensors.Contents
    do {
        contents = try SafeTensors.parse(Data(bytes), file: "fuzz.safetensors")
    } catch {
        fuzzCheck(!error.message.isEmpty, "empty error message")
        return 0
    }
    fuzzCheck(Set(contents.names) == Set(contents.tensors.keys), "names and tensors disagree")
    let ordered = contents.names.map { ($0, contents.tensors[$0]!) }
    let again: SafeTensors.Contents
    do {
        again = try SafeTensors.parse(SafeTensors.serialize(ordered, metadata: contents.metadata))
    } catch {
        fatalError("a parsed file does not round-trip: \(error)")
    }
    fuzzCheck(again.metadata == contents.metadata, "metadata changed in the round trip")
    for (name, t) in ordered {
        guard let u = again.tensors[name] else { fatalError("tensor '\(name)' lost in the round trip") }
        fuzzCheck(u.shape == t.shape, "'\(name)': shape \(t.shape) became \(u.shape)")
        fuzzCheck(u.scalars.map(\.bitPattern) == t.scalars.map(\.bitPattern), "'\(name)': values changed")
    }
    return 0
}
