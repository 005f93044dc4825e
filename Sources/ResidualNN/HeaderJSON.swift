/// A strict JSON reader for safetensors headers, which are untrusted input.
///
/// Foundation's `JSONSerialization` silently keeps one of two duplicate keys and turns integers
/// into doubles; a checkpoint with two entries of the same name, or an offset past 2⁵³, must
/// instead be rejected. This reader rejects duplicate keys in any object, keeps integers exact
/// (anything that is not an integer in `Int`'s range is `.number(Double)`), limits nesting depth,
/// and never reads past the end of its input.
enum HeaderJSON: Equatable {
    case object([(String, HeaderJSON)])
    case array([HeaderJSON])
    case string(String)
    case integer(Int)
    case number(Double)
    case bool(Bool)
    case null

    static func == (a: HeaderJSON, b: HeaderJSON) -> Bool {
        switch (a, b) {
        case let (.object(x), .object(y)): x.map(\.0) == y.map(\.0) && x.map(\.1) == y.map(\.1)
        case let (.array(x), .array(y)): x == y
        case let (.string(x), .string(y)): x == y
        case let (.integer(x), .integer(y)): x == y
        case let (.number(x), .number(y)): x == y
        case let (.bool(x), .bool(y)): x == y
        case (.null, .null): true
        default: false
        }
    }

    struct ParseError: Error { let message: String }

    static let maximumDepth = 64

    /// Parses one JSON value that spans `bytes` (surrounding whitespace allowed).
    static func parse(_ bytes: [UInt8]) throws(ParseError) -> HeaderJSON {
        var p = Parser(bytes: bytes)
        let value = try p.value(depth: 0)
        p.skipWhitespace()
        guard p.index == bytes.count else { throw p.error("unexpected data after the JSON value") }
        return value
    }

    var integer: Int? { if case .integer(let i) = self { i } else { nil } }
    var string: String? { if case .string(let s) = self { s } else { nil } }
    var array: [HeaderJSON]? { if case .array(let a) = self { a } else { nil } }

    subscript(key: String) -> HeaderJSON? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0 == key }?.1
    }

    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        func error(_ message: String) -> ParseError { ParseError(message: "\(message) at byte \(index)") }

        mutating func skipWhitespace() {
            while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
        }

        mutating func expect(_ literal: String) throws(ParseError) {
            for b in literal.utf8 {
                guard index < bytes.count, bytes[index] == b else { throw error("expected '\(literal)'") }
                index += 1
            }
        }

        mutating func value(depth: Int) throws(ParseError) -> HeaderJSON {
            guard depth < HeaderJSON.maximumDepth else { throw error("nesting deeper than \(HeaderJSON.maximumDepth)") }
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "n"): try expect("null"); return .null
            default: return try number()
            }
        }

        mutating func object(depth: Int) throws(ParseError) -> HeaderJSON {
            index += 1
            var members: [(String, HeaderJSON)] = []
            var keys = Set<String>()
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return .object([]) }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a key") }
                let key = try string()
                guard keys.insert(key).inserted else { throw error("duplicate key \"\(key)\"") }
                skipWhitespace()
                try expect(":")
                members.append((key, try value(depth: depth + 1)))
                skipWhitespace()
                guard index < bytes.count else { throw error("unterminated object") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                try expect("}")
                return .object(members)
            }
        }

        mutating func array(depth: Int) throws(ParseError) -> HeaderJSON {
            index += 1
            var elements: [HeaderJSON] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return .array([]) }
            while true {
                elements.append(try value(depth: depth + 1))
                skipWhitespace()
                guard index < bytes.count else { throw error("unterminated array") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                try expect("]")
                return .array(elements)
            }
        }

        mutating func hex4() throws(ParseError) -> UInt32 {
            guard index + 4 <= bytes.count else { throw error("truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[index]
                let d: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
                default: throw error("bad \\u escape")
                }
                v = v << 4 | UInt32(d)
                index += 1
            }
            return v
        }

        mutating func string() throws(ParseError) -> String {
            index += 1
            var out: [UInt8] = []
            while true {
                guard index < bytes.count else { throw error("unterminated string") }
                let c = bytes[index]
                index += 1
                switch c {
                case UInt8(ascii: "\""):
                    guard let s = String(validating: out, as: UTF8.self) else { throw error("string is not UTF-8") }
                    return s
                case UInt8(ascii: "\\"):
                    guard index < bytes.count else { throw error("unterminated escape") }
                    let e = bytes[index]
                    index += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800..<0xDC00).contains(scalar) {
                            try expect("\\u")
                            let low = try hex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw error("bad surrogate pair") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let u = Unicode.Scalar(scalar) else { throw error("bad \\u escape") }
                        out.append(contentsOf: Array(String(Character(u)).utf8))
                    default: throw error("bad escape")
                    }
                case 0..<0x20: throw error("control character in string")
                default: out.append(c)
                }
            }
        }

        mutating func number() throws(ParseError) -> HeaderJSON {
            let start = index
            if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
            let digitsStart = index
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
            guard index > digitsStart else { throw error("unexpected character") }
            var isInteger = true
            while index < bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"), UInt8(ascii: "+"),
                                        UInt8(ascii: "-")].contains(bytes[index])
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) {
                isInteger = false
                index += 1
            }
            let text = String(decoding: bytes[start..<index], as: UTF8.self)
            if isInteger, let i = Int(text) { return .integer(i) }
            guard let d = Double(text), d.isFinite else { throw error("bad number \(text)") }
            return .number(d)
        }
    }
}
