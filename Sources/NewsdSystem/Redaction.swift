import Foundation

/// Takes secrets out of text before it is logged or shown.
public enum Redaction {
    /// A URL with any `user:password@` userinfo replaced by `***@` (also for URLs that do not parse).
    public static func url(_ text: String) -> String {
        guard let scheme = text.range(of: "://") else { return text }
        let rest = text[scheme.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return text }
        return String(text[..<scheme.upperBound]) + "***" + String(rest[at...])
    }

    /// `message` with every secret of a libpq connection string taken out: the password of a URI
    /// (`postgresql://user:secret@host`, raw and percent-decoded), a `password=` keyword, and the
    /// separately given `password`. libpq quotes the connection string in some errors (a bad
    /// percent-encoding), so its messages are redacted before they reach a log.
    public static func postgres(_ message: String, conninfo: String, password: String? = nil) -> String {
        var secrets: [String] = []
        if let password, !password.isEmpty { secrets.append(password) }
        if let scheme = conninfo.range(of: "://") {
            let rest = conninfo[scheme.upperBound...]
            let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
            if let at = rest[..<authorityEnd].lastIndex(of: "@"), let colon = rest[..<at].firstIndex(of: ":") {
                let raw = String(rest[rest.index(after: colon)..<at])
                secrets.append(raw)
                if let decoded = raw.removingPercentEncoding { secrets.append(decoded) }
            }
            if let query = rest.firstIndex(of: "?") {
                for pair in rest[rest.index(after: query)...].split(separator: "&") where pair.hasPrefix("password=") {
                    secrets.append(String(pair.dropFirst("password=".count)))
                }
            }
        } else {
            // keyword=value form: password=secret or password='se cret'
            var s = Substring(conninfo)
            while let r = s.range(of: "password") {
                var v = s[r.upperBound...].drop { $0 == " " }
                guard v.first == "=" else { s = s[r.upperBound...]; continue }
                v = v.dropFirst().drop { $0 == " " }
                let value: Substring = v.first == "'" ? v.dropFirst().prefix { $0 != "'" } : v.prefix { $0 != " " }
                secrets.append(String(value))
                s = v
            }
        }
        var out = message
        for secret in secrets.filter({ !$0.isEmpty }).sorted(by: { $0.count > $1.count }) { out = out.replacingOccurrences(of: secret, with: "***") }
        return out
    }
}
