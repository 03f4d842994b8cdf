import Foundation
import Testing

/// The README's command lines are run: every `newsd` command it shows exists, and every flag it
/// shows is one the command takes. (Before: the README documented `dev-teacher --rate-429`, the
/// command took `--rate429`.)
@Suite("README command lines")
struct ReadmeCommandTests {
    /// (subcommand path, flags) of every `newsd ...` line in the README (continuations joined).
    static func commands() throws -> [(path: [String], flags: [String], line: String)] {
        let text = try String(contentsOf: Harness.packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let joined = text.replacingOccurrences(of: "\\\n", with: " ")
        var out: [(path: [String], flags: [String], line: String)] = []
        for line in joined.split(separator: "\n") {
            var rest = Substring(line)
            while let r = rest.range(of: "newsd ") {
                // Only command lines: at the start of a line or inside `...`.
                let before = rest[..<r.lowerBound]
                guard before.isEmpty || before.hasSuffix("`") || before.trimmingCharacters(in: .whitespaces).isEmpty || before.hasSuffix("- `") else {
                    rest = rest[r.upperBound...]; continue
                }
                var segment = rest[r.upperBound...]
                if let end = segment.firstIndex(where: { $0 == "`" || $0 == "#" || $0 == "|" }) { segment = segment[..<end] }
                let words = segment.split(separator: " ").map(String.init)
                let path = Array(words.prefix { $0.range(of: #"^[a-z][a-z-]*$"#, options: .regularExpression) != nil }.prefix(2))
                let flags = words.compactMap { w -> String? in
                    guard let m = w.range(of: #"--[a-z0-9][a-z0-9-]*"#, options: .regularExpression) else { return nil }
                    return String(w[m])
                }
                if !path.isEmpty { out.append((path, flags, String(line))) }
                rest = rest[r.upperBound...]
            }
        }
        return out
    }

    @Test("every command and flag in the README exists")
    func readmeCommandsExist() throws {
        let commands = try Self.commands()
        #expect(commands.count >= 15, "\(commands.map(\.line))")
        var helps: [String: String] = [:]
        for c in commands {
            // A path's second word may be an argument (`newsd rescore --since`): try the longest
            // path whose help succeeds.
            var help: String?
            for n in stride(from: c.path.count, through: 1, by: -1) {
                let key = c.path.prefix(n).joined(separator: " ")
                if let h = helps[key] { help = h; break }
                let p = try DaemonProcess(arguments: Array(c.path.prefix(n)) + ["--help"], name: "help-\(key.replacingOccurrences(of: " ", with: "-"))",
                                          outputToLog: true)
                if p.wait(timeout: 30) == 0 { helps[key] = p.logText; help = p.logText; break }
            }
            guard let help else { Issue.record("no such command: newsd \(c.path.joined(separator: " ")) (\(c.line))"); continue }
            for flag in c.flags where flag != "--help" {
                #expect(help.contains(flag), "newsd \(c.path.joined(separator: " ")) has no \(flag) (README: \(c.line))")
            }
        }
    }
}
