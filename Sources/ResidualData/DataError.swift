/// A problem with a data file. Files are untrusted: every parser reports what it expected, what it
/// found, the file and the byte offset, and never reads outside the bytes it was given.
public struct DataError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        case truncated, corrupt, badMagic, badChecksum, badDimensions, notFound, io, unsupported
    }
    public let kind: Kind
    public let file: String
    public let offset: Int?
    public let message: String

    public init(_ kind: Kind, file: String, offset: Int? = nil, _ message: String) {
        self.kind = kind; self.file = file; self.offset = offset; self.message = message
    }

    public var description: String {
        "\(file): \(message)" + (offset.map { " (at byte \($0))" } ?? "")
    }

    func renamed(_ file: String) -> DataError { DataError(kind, file: file, offset: offset, message) }
}
