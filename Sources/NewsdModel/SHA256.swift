import CCrypto
import Foundation

/// SHA-256 checksums (OpenSSL's libcrypto) for checkpoints and artifacts.
public enum SHA256 {
    /// Lower-case hex digest of `bytes`.
    public static func hex<Bytes: ContiguousBytes>(of bytes: Bytes) -> String {
        var digest = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
        bytes.withUnsafeBytes { raw in
            _ = CCrypto.SHA256(raw.baseAddress?.assumingMemoryBound(to: UInt8.self), raw.count, &digest)
        }
        return digest.map { String(format: "%02x", $0) }.joined()
    }

    /// Lower-case hex digest of a file's content.
    public static func hex(ofFile url: URL) throws -> String {
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw ModelError.missingFile(url.path, underlying: "\(error)")
        }
        return hex(of: data)
    }
}
