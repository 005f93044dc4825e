import Foundation

/// A progress line that rewrites itself in place on a terminal (carriage return + clear to end of
/// line) and falls back to plain lines, at most one every `plainInterval` seconds, when stdout is a
/// pipe or a file (CI logs stay readable).
final class ProgressLine {
    let isTerminal = isatty(STDOUT_FILENO) != 0
    let plainInterval: Double
    let quiet: Bool
    private var lastPlain = -Double.infinity
    private var active = false

    init(plainInterval: Double = 10, quiet: Bool = false) { self.plainInterval = plainInterval; self.quiet = quiet }

    func update(_ text: String, now: Double = monotonicSeconds()) {
        if quiet { return }
        if isTerminal {
            FileHandle.standardOutput.write(("\r" + text + "\u{1B}[K").data(using: .utf8)!)
            active = true
        } else if now - lastPlain >= plainInterval {
            FileHandle.standardOutput.write((text + "\n").data(using: .utf8)!)
            lastPlain = now
        }
    }

    /// Ends the in-place line so the next output starts on a fresh line.
    func finish(_ text: String? = nil) {
        if let text { update(text, now: .infinity) }
        if isTerminal && active { FileHandle.standardOutput.write("\n".data(using: .utf8)!) }
        active = false
        lastPlain = -Double.infinity
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// "1:05:03", "4:07", "0:09"
func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "--:--" }
    let s = Int(seconds.rounded())
    let h = s / 3600, m = (s % 3600) / 60, sec = s % 60
    return h > 0 ? String(format: "%d:%02d:%02d", h, m, sec) : String(format: "%d:%02d", m, sec)
}

/// Peak resident set size of this process in MB (Linux: VmHWM in /proc/self/status).
func peakResidentMB() -> Double {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
        return kb / 1024
    }
    return 0
}

/// Writes a line to standard output unbuffered, so it interleaves correctly with the progress line
/// and shows up at once in CI logs.
func say(_ s: String) {
    FileHandle.standardOutput.write((s + "\n").data(using: .utf8)!)
}
