import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Puts the directory `source` at `target` with `rename(2)`, so no reader ever sees a half-written
/// directory. When `target` already exists and `keepExistingIf` accepts it, it is kept and
/// `source` is left for the caller to remove; otherwise the old one is first renamed aside (also
/// one step) and removed after.
public func replaceDirectoryAtomically(_ target: URL, with source: URL, keepExistingIf keep: (URL) -> Bool) throws {
    if rename(source.path, target.path) == 0 { return }
    let code = errno
    guard code == ENOTEMPTY || code == EEXIST else {
        throw SystemError("cannot move \(source.path) to \(target.path): \(String(cString: strerror(code)))")
    }
    if keep(target) { return }
    let aside = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).old-\(UUID().uuidString)")
    if rename(target.path, aside.path) != 0 && errno != ENOENT {
        throw SystemError("cannot move \(target.path) aside: \(String(cString: strerror(errno)))")
    }
    defer { try? FileManager.default.removeItem(at: aside) }
    guard rename(source.path, target.path) == 0 || keep(target) else {
        throw SystemError("cannot move \(source.path) to \(target.path): \(String(cString: strerror(errno)))")
    }
}
