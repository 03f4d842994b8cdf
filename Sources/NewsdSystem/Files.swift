import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Files written so that a crash or a concurrent reader never sees half of them.
public enum DurableFiles {
    /// Writes `data` to `url` and fsyncs it.
    public static func writeSynced(_ data: Data, to url: URL) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw SystemError("cannot write \(url.path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        try data.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 { if errno == EINTR { continue }; throw SystemError("cannot write \(url.path): \(String(cString: strerror(errno)))") }
                off += n
            }
        }
        guard fsync(fd) == 0 else { throw SystemError("cannot write \(url.path): fsync: \(String(cString: strerror(errno)))") }
    }

    /// fsyncs a file or directory (a directory's entries: renames in it become durable).
    public static func fsyncPath(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw SystemError("cannot open \(url.path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        _ = fsync(fd)
    }

    /// A unique sibling name of `url` for a temporary or set-aside copy (`.<name>.<tag>-<uuid>`).
    public static func sibling(of url: URL, tag: String) -> URL {
        url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(tag)-\(UUID().uuidString)")
    }

    /// Puts the directory `source` at `target` with `rename(2)`, so no reader ever sees a
    /// half-written directory, and makes the rename durable. When `target` already exists and
    /// `keepExistingIf` accepts it, it is kept and `source` is left for the caller to remove;
    /// otherwise the old one is first renamed aside (also one step) and removed after.
    public static func replaceDirectory(_ target: URL, with source: URL, keepExistingIf keep: (URL) -> Bool = { _ in false }) throws {
        defer { try? fsyncPath(target.deletingLastPathComponent()) }
        if rename(source.path, target.path) == 0 { return }
        let code = errno
        guard code == ENOTEMPTY || code == EEXIST else {
            throw SystemError("cannot move \(source.path) to \(target.path): \(String(cString: strerror(code)))")
        }
        if keep(target) { return }
        let aside = sibling(of: target, tag: "old")
        if rename(target.path, aside.path) != 0 && errno != ENOENT {
            throw SystemError("cannot move \(target.path) aside: \(String(cString: strerror(errno)))")
        }
        defer { try? FileManager.default.removeItem(at: aside) }
        guard rename(source.path, target.path) == 0 || keep(target) else {
            let reason = String(cString: strerror(errno))
            _ = rename(aside.path, target.path)
            throw SystemError("cannot move \(source.path) to \(target.path): \(reason)")
        }
    }
}

/// The calling thread's scheduling: training threads run at a lower priority than ingest.
public enum ThreadPriority {
    /// Lowers the calling thread's priority to `nice` (Linux: per thread, inherited by threads it
    /// starts) and returns its thread id, for `restore`.
    @discardableResult
    public static func lowerCurrentThread(nice: Int32) -> Int32 {
        let tid = Int32(truncatingIfNeeded: syscall_gettid())
        // who = 0 is the calling thread on Linux; the id is kept to restore it from another thread.
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice)
        return tid
    }

    /// Puts thread `tid` back to nice 0, so a niced training run that is asked to stop is not
    /// starved by the work around it. Allowed to root, or where RLIMIT_NICE permits it (the
    /// systemd unit sets `LimitNICE=+0`); elsewhere it quietly does nothing.
    public static func restore(_ tid: Int32) {
        guard tid > 0 else { return }
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(tid), 0)
    }

    /// The calling thread's kernel id (`/proc/thread-self` is `<pid>/task/<tid>`; `gettid` and
    /// the variadic `syscall` are not callable from Swift here).
    private static func syscall_gettid() -> Int {
        let link = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")) ?? ""
        return Int(link.split(separator: "/").last ?? "") ?? 0
    }
}

/// Waits until `fd` is readable or `milliseconds` pass; true when readable.
public func waitReadable(_ fd: Int32, milliseconds: Int32) -> Bool {
    var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    return poll(&pfd, 1, milliseconds) > 0
}

/// The real user id (for per-user temporary directories).
public var currentUserID: UInt32 { getuid() }
