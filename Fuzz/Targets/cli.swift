// The `resnet` command line (Examples/resnet/Arguments.swift) with the real command table (the
// script extracts `trainOptions` and `commands` from Examples/resnet/main.swift). Input: the
// arguments separated by NUL bytes. Mirrors `run()` up to the point where a command would start
// working: command lookup, option parsing, --help text, and every typed accessor the commands
// use (int with the commands' ranges, double, choice, the --depths list), each of which must
// either return or throw a UsageError.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCLI(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let args = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    guard let first = args.first, let command = commands.first(where: { $0.name == first }) else { return 0 }
    do {
        let o = try ParsedOptions(Array(args.dropFirst()), for: command)
        if o.flag("help") { fuzzCheck(!command.help.isEmpty, "empty help"); return 0 }
        for option in command.options {
            if option.value == nil { _ = o.flag(option.name); continue }
            _ = o.string(option.name)
            _ = try? o.int(option.name)
            _ = try? o.int(option.name, range: 1...65_536)
            _ = try? o.int(option.name, range: 100...Int.max)
            _ = try? o.double(option.name)
            _ = try? o.double(option.name, range: 0...100)
            _ = try? o.choice(option.name, ["A", "B", "C", "a", "b", "c"])
        }
        if let s = o.string("depths") {
            let depths = s.split(separator: ",").compactMap { Int($0) }
            _ = depths.count == 2 && depths.allSatisfy { $0 >= 8 && ($0 - 2) % 6 == 0 }
        }
        if let seed = try? o.int("seed") { _ = UInt64(seed) }
    } catch let e as UsageError {
        fuzzCheck(!e.message.isEmpty, "empty usage message")
        _ = e.command?.help
    } catch {
        fatalError("ParsedOptions threw something other than a UsageError: \(error)")
    }
    return 0
}
