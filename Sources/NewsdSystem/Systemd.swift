import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// systemd's notification protocol (`Type=notify`): datagrams to `$NOTIFY_SOCKET`.
public enum SystemdNotifier {
    /// The interval systemd expects `WATCHDOG=1` within (`WatchdogSec=`, passed as
    /// `WATCHDOG_USEC`), or nil when the watchdog is off or meant for another process
    /// (`WATCHDOG_PID`).
    public static func watchdogInterval(environment: [String: String] = ProcessInfo.processInfo.environment) -> Double? {
        guard let raw = environment["WATCHDOG_USEC"], let usec = Double(raw), usec > 0 else { return nil }
        if let pid = environment["WATCHDOG_PID"], let p = Int32(pid), p != getpid() { return nil }
        return usec / 1e6
    }

    /// `CLOCK_MONOTONIC` in microseconds (`MONOTONIC_USEC=` of a `RELOADING=1` message).
    public static var monotonicMicroseconds: UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
    }

    /// Sends a state string such as `READY=1`, `STOPPING=1` or `STATUS=...`; does nothing when
    /// not started by systemd.
    public static func notify(_ state: String) {
        guard var path = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"], !path.isEmpty else { return }
        if path.hasPrefix("@") { path = "\0" + path.dropFirst() }   // abstract namespace
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in raw.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        _ = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                state.withCString { sendto(fd, $0, strlen($0), 0, sa, length) }
            }
        }
    }
}
