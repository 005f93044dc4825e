import Foundation

/// A small declarative command-line parser (the package has no dependencies, so no
/// swift-argument-parser): each subcommand lists its options; anything else is a usage error
/// (exit status 2) with the subcommand's help.
struct Option {
    let name: String          // "epochs" for --epochs
    let value: String?        // "N" if the option takes a value; nil for a flag
    let help: String
    var defaultValue: String? = nil
}

struct Command {
    let name: String
    let summary: String
    let usage: String
    let options: [Option]

    var help: String {
        var s = "\(summary)\n\nUsage: resnet \(usage)\n\nOptions:\n"
        let all = options + [Option(name: "help", value: nil, help: "Show this help.")]
        let width = all.map { "--\($0.name)\($0.value.map { " \($0)" } ?? "")".count }.max() ?? 0
        for o in all {
            let left = "--\(o.name)\(o.value.map { " \($0)" } ?? "")"
            let pad = String(repeating: " ", count: width - left.count + 2)
            s += "  \(left)\(pad)\(o.help)\(o.defaultValue.map { " (default: \($0))" } ?? "")\n"
        }
        return s
    }
}

struct UsageError: Error, CustomStringConvertible {
    let message: String
    let command: Command?
    var description: String { message }
}

struct ParsedOptions {
    let command: Command
    private(set) var values: [String: String] = [:]
    private(set) var flags: Set<String> = []

    init(_ args: [String], for command: Command) throws {
        self.command = command
        var i = 0
        while i < args.count {
            let a = args[i]
            guard a.hasPrefix("--") else {
                throw UsageError(message: "unexpected argument '\(a)'", command: command)
            }
            var name = String(a.dropFirst(2))
            var inline: String? = nil
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            if name == "help" { flags.insert("help"); i += 1; continue }
            guard let spec = command.options.first(where: { $0.name == name }) else {
                throw UsageError(message: "unknown option '--\(name)'", command: command)
            }
            if spec.value == nil {
                if inline != nil { throw UsageError(message: "--\(name) takes no value", command: command) }
                flags.insert(name)
                i += 1
            } else if let v = inline {
                values[name] = v
                i += 1
            } else {
                guard i + 1 < args.count else {
                    throw UsageError(message: "--\(name) needs a value (\(spec.value!))", command: command)
                }
                values[name] = args[i + 1]
                i += 2
            }
        }
    }

    func flag(_ name: String) -> Bool { flags.contains(name) }

    func string(_ name: String) -> String? {
        values[name] ?? command.options.first { $0.name == name }?.defaultValue
    }

    func int(_ name: String, range: ClosedRange<Int> = 0...Int.max) throws -> Int? {
        guard let s = string(name) else { return nil }
        guard let v = Int(s), range.contains(v) else {
            throw UsageError(message: "--\(name): '\(s)' is not an integer in \(range.lowerBound)...\(range.upperBound == Int.max ? "" : String(range.upperBound))", command: command)
        }
        return v
    }

    func double(_ name: String, range: ClosedRange<Double> = -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude) throws -> Double? {
        guard let s = string(name) else { return nil }
        guard let v = Double(s), v.isFinite, range.contains(v) else {
            throw UsageError(message: "--\(name): '\(s)' is not a number in \(range)", command: command)
        }
        return v
    }

    func choice(_ name: String, _ allowed: [String]) throws -> String? {
        guard let s = string(name) else { return nil }
        guard allowed.contains(s) else {
            throw UsageError(message: "--\(name): '\(s)' is not one of \(allowed.joined(separator: ", "))", command: command)
        }
        return s
    }
}

/// Standard error, unbuffered.
func printError(_ s: String) {
    FileHandle.standardError.write((s + "\n").data(using: .utf8)!)
}
