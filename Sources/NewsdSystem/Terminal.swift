import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A progress display: a redrawn bar on a terminal, plain lines (at most every few seconds) otherwise.
public final class ProgressReporter: Sendable {
    private let isTerminal: Bool
    /// When the last plain line was written (reporters are called from worker tasks).
    private let lastLine = LockedValue(0.0)
    private let minimumInterval: Double

    /// Reports to standard error; `minimumInterval` spaces the plain lines.
    public init(minimumInterval: Double = 5) {
        isTerminal = isatty(STDERR_FILENO) == 1
        self.minimumInterval = minimumInterval
    }

    /// Shows `fraction` done with a label and details (e.g. "loss 0.41  312 ex/s  ETA 0:42").
    public func update(fraction: Double, label: String, details: String, force: Bool = false) {
        let now = Date().timeIntervalSince1970
        if isTerminal {
            let width = 30, filled = Int((min(max(fraction, 0), 1) * Double(width)).rounded())
            let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
            write("\r\u{1B}[2K\(label) \(bar) \(String(format: "%3.0f%%", fraction * 100)) \(details)")
            if fraction >= 1 { write("\n") }
        } else if lastLine.withLock({ last in
            guard force || now - last >= minimumInterval || fraction >= 1 else { return false }
            last = now
            return true
        }) {
            write("\(label) \(String(format: "%.0f%%", fraction * 100)) \(details)\n")
        }
    }

    private func write(_ s: String) { FileHandle.standardError.write(Data(s.utf8)) }

    /// Formats seconds as m:ss or h:mm:ss.
    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}

/// A plain text table with aligned columns.
public func formatTable(_ rows: [[String]]) -> String {
    guard let first = rows.first else { return "" }
    var widths = [Int](repeating: 0, count: first.count)
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    return rows.map { r in
        r.enumerated().map { i, c in i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            : String(repeating: " ", count: widths[i] - c.count) + c }.joined(separator: "  ")
    }.joined(separator: "\n")
}

/// Peak resident set size of this process in bytes.
public func peakResidentBytes() -> Int {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return usage.ru_maxrss * 1024
}
