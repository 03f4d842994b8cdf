import Foundation

/// Headless Chromium for the report's PNG and DOM (the test checks what a browser renders).
public struct HeadlessBrowser: Sendable {
    /// The program (`chromium`).
    public var executable: String
    /// A browser.
    public init(executable: String = "chromium") { self.executable = executable }

    func run(_ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        // --no-sandbox: Chromium refuses to run as root with its sandbox (CI and this machine run as root).
        let profile = NSTemporaryDirectory() + "newsd-chromium-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        p.arguments = [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                       "--no-first-run", "--user-data-dir=\(profile)"] + arguments
        // Standard error goes to a file: read after standard output, a pipe could fill up and
        // stall the browser.
        let out = Pipe(), errorLog = profile + ".stderr"
        _ = FileManager.default.createFile(atPath: errorLog, contents: nil)   // if that fails, the browser inherits our stderr
        p.standardOutput = out
        p.standardError = FileHandle(forWritingAtPath: errorLog)
        defer { try? FileManager.default.removeItem(atPath: profile); try? FileManager.default.removeItem(atPath: errorLog) }
        do { try p.run() } catch { throw ReportError("cannot start \(executable): \(error) (apt install chromium)") }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let errors = FileManager.default.contents(atPath: errorLog) ?? Data()
        guard p.terminationStatus == 0 else {
            throw ReportError("\(executable) exited \(p.terminationStatus): \(String(decoding: errors.suffix(600), as: UTF8.self))")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Renders `page` (a file) and writes a PNG screenshot.
    public func screenshot(page: String, png: String, width: Int = 1100, height: Int = 1000) throws {
        _ = try run(["--window-size=\(width),\(height)", "--screenshot=\(URL(fileURLWithPath: png).path)", URL(fileURLWithPath: page).absoluteString])
        guard FileManager.default.fileExists(atPath: png) else { throw ReportError("\(executable) wrote no screenshot") }
    }

    /// The DOM after rendering `page`.
    public func dom(page: String) throws -> String {
        try run(["--dump-dom", URL(fileURLWithPath: page).absoluteString])
    }
}

/// A report could not be made.
public struct ReportError: Error, CustomStringConvertible, Sendable {
    /// What went wrong.
    public var description: String
    /// Never retriable.
    public var isRetriable: Bool { false }
    /// An error.
    public init(_ d: String) { description = d }
}
