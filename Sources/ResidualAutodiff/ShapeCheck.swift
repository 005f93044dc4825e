/// Programmer errors (shape mismatches, bad axes) stop the program with a message naming the op and
/// the shapes involved, e.g. `matmul: [4, 3] x [5, 2]`.
///
/// Swift's `precondition` drops its message in optimised builds, which is where this engine runs, so
/// these checks go through `fatalError`, which always prints it.
@inlinable @inline(__always)
public func shapeCheck(
    _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
    file: StaticString = #fileID, line: UInt = #line
) {
    if !condition() { fatalError(message(), file: file, line: line) }
}

/// Formats a shape as `[2, 3, 4]`.
@inlinable
public func describe(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ", ") + "]" }
