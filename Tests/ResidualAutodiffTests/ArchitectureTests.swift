import Testing
import Foundation

/// The import direction of docs/Architecture.md, checked against the sources: SwiftPM lets a target
/// import any module it depends on *transitively* (ResidualZoo could `import ResidualKernels`), so
/// Package.swift alone does not enforce the table. The allowed imports are read from the table's
/// "may import" column, so the document and the check cannot drift apart.
@Suite struct ArchitectureTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// module -> modules it may import (`nil`: all), from the table rows "| `Module` | folder | ... | may import |".
    static func allowedImports(architecture text: String) -> [String: Set<String>?] {
        var allowed: [String: Set<String>?] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("| `Residual") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 4 else { continue }
            let module = cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            let may = cells[cells.count - 1]
            if may == "all" { allowed[module] = .some(nil); continue }
            if may == "toolchain only" { allowed[module] = .some([]); continue }
            allowed[module] = .some(Set(may.split(separator: ",").map {
                "Residual" + $0.trimmingCharacters(in: .whitespaces)
            }))
        }
        return allowed
    }

    /// The Residual* modules a source file imports (`import M`, `@_exported import M`,
    /// `import struct M.T`, `@testable import M`).
    static func importedModules(_ source: String) -> Set<String> {
        var found = Set<String>()
        let kinds: Set<String> = ["struct", "class", "enum", "protocol", "func", "typealias", "var", "let"]
        for line in source.split(separator: "\n") {
            var words = line.split(separator: " ").map(String.init).filter { !$0.hasPrefix("@") }
            guard words.first == "import", words.count >= 2 else { continue }
            words.removeFirst()
            if kinds.contains(words[0]), words.count >= 2 { words.removeFirst() }
            let module = String(words[0].split(separator: ".")[0])
            if module.hasPrefix("Residual") { found.insert(module) }
        }
        return found
    }

    /// "file: imports M, not allowed" for every back-edge; modules missing from the table are errors too.
    static func violations(allowed: [String: Set<String>?], sources: [(module: String, file: String, text: String)])
        -> [String] {
        var out: [String] = []
        for (module, file, text) in sources {
            guard let entry = allowed[module] else {
                out.append("\(file): module \(module) has no row in docs/Architecture.md")
                continue
            }
            guard let permitted = entry else { continue }
            for m in importedModules(text).sorted() where m != module && !permitted.contains(m) {
                out.append("\(file): \(module) imports \(m), not allowed by docs/Architecture.md")
            }
        }
        return out
    }

    static func librarySources() throws -> [(module: String, file: String, text: String)] {
        let sources = root.appendingPathComponent("Sources")
        var result: [(module: String, file: String, text: String)] = []
        let fm = FileManager.default
        for module in try fm.contentsOfDirectory(atPath: sources.path).sorted() {
            let dir = sources.appendingPathComponent(module)
            guard let walker = fm.enumerator(atPath: dir.path) else { continue }
            for case let relative as String in walker where relative.hasSuffix(".swift") {
                let text = try String(contentsOf: dir.appendingPathComponent(relative), encoding: .utf8)
                result.append((module, "Sources/\(module)/\(relative)", text))
            }
        }
        return result
    }

    @Test func libraryModulesImportOnlyAlongTheDocumentedDirection() throws {
        let doc = try String(contentsOf: Self.root.appendingPathComponent("docs/Architecture.md"), encoding: .utf8)
        let allowed = Self.allowedImports(architecture: doc)
        #expect(allowed["ResidualKernels"] == .some([]), "the table gives Kernels no Residual imports")
        #expect(allowed["ResidualAutodiff"] == .some(["ResidualKernels"]))
        let sources = try Self.librarySources()
        #expect(sources.count > 30, "found \(sources.count) source files")
        #expect(Set(sources.map(\.module)).count >= 8)
        let found = Self.violations(allowed: allowed, sources: sources)
        #expect(found.isEmpty, "\(found.joined(separator: "\n"))")
    }

    /// The check bites: a back-edge, a transitive import and an undocumented module are reported.
    @Test func checkRejectsBackEdges() throws {
        let doc = try String(contentsOf: Self.root.appendingPathComponent("docs/Architecture.md"), encoding: .utf8)
        let allowed = Self.allowedImports(architecture: doc)
        let bad = [
            (module: "ResidualAutodiff", file: "a.swift", text: "import Foundation\nimport ResidualNN\n"),
            (module: "ResidualZoo", file: "b.swift", text: "@_exported import struct ResidualKernels.Conv2dShape\n"),
            (module: "ResidualKernels", file: "c.swift", text: "// import ResidualAutodiff (a comment)\nimport Dispatch\n"),
            (module: "ResidualNew", file: "d.swift", text: "import ResidualAutodiff\n"),
        ]
        let found = Self.violations(allowed: allowed, sources: bad)
        #expect(found.count == 3, "\(found)")
        #expect(found.contains { $0.hasPrefix("a.swift: ResidualAutodiff imports ResidualNN") })
        #expect(found.contains { $0.hasPrefix("b.swift: ResidualZoo imports ResidualKernels") })
        #expect(found.contains { $0.hasPrefix("d.swift: module ResidualNew has no row") })
    }
}
